"""Unpaired translation between image domains (cyclegan, stargan): trained on images of
several domains (y = domain ids, beside class labels for the semantic term), sampled by
translating test images of one domain into another, scored on whether the translation reached
the target domain, kept the digit and survives the round trip, and on sample quality per target
domain; the figure shows inputs beside their translations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen import classifier as clf
from gen import metrics as M
from gen.conditions import (
    COLUMNS,
    ConditionKind,
    Conditions,
    DataKey,
    _cycle,
    build_once,
    model_domains,
    random_pairs,
)
from gen.config import ConfigError
from gen.data import DataConfig, Split, expected_meta
from gen.evaluation import Protocol, domain_features, domain_quality, mean_of
from gen.plots import labelled_rows

if TYPE_CHECKING:
    from gen.conditions import Device, Saved
    from gen.models.base import GenerativeModel

DOMAINS = DataKey("domains", "typeset", "typeset, cyclegan_folder, domain_folders or attribute_csv")


def data_domain(split: Split) -> int | None:
    """The domain made of the data set's own training images (typeset domains: 0,
    `handwritten`), whose held-out images are the validation split; None if none is."""
    d = split.domains
    for k in range(len(d.names)):
        x = d.train_x[d.train_d == k]
        if x.shape == split.train_x.shape and torch.equal(x, split.train_x):
            return k
    return None


def domain_names(data: DataConfig) -> list[str] | None:
    """The domains data set `data` will have, where params alone tell (else None)."""
    if data.domains == "typeset":
        return ["handwritten", *data.typeset_styles]
    if data.domains == "cyclegan_folder":
        return ["A", "B"]
    return None  # read from folders or a CSV when the data is prepared


class DomainKind(ConditionKind):
    name = "domain"

    def check_data(
        self, model: type[GenerativeModel], section: dict[str, Any] | None, data: DataConfig
    ) -> None:
        """Domains on, and the model built for them where params alone name them."""
        DOMAINS.check_params(model.name, data)
        meta = expected_meta(data)
        names = domain_names(data)
        if names is None:
            return  # the folders' domains are checked when they are read
        meta.extra["domains"] = names
        build_once(model, section, meta)

    def training_data(
        self, model: GenerativeModel, split: Split
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of the model's domains with their domain ids, and class labels beside them
        (y = (n, 2)) when the model uses labels."""
        DOMAINS.check_split(model.name, split.domains is not None)
        d = split.domains
        keep = torch.isin(d.train_d, torch.tensor(model_domains(model)))
        if not model.uses_labels:
            return d.train_x[keep], d.train_d[keep]
        labels = d.train_y[keep]
        if len(labels.unique()) < 2:
            raise ConfigError(
                f"model '{model.name}' is set to use class labels (semantic_weight > 0) but "
                "the domain images have none (the folder layouts carry no labels); set "
                f"{model.name}.semantic_weight to 0"
            )
        return d.train_x[keep], torch.stack([d.train_d[keep], labels], dim=1)

    def sampling_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        """Test images of the model's domains, each going to another of its domains, chosen
        uniformly."""
        DOMAINS.check_split(model.name, split.domains is not None)
        d, used = split.domains, model_domains(model)
        pool = torch.nonzero(torch.isin(d.test_d, torch.tensor(used))).flatten()
        idx = pool[_cycle(n, len(pool), generator)]
        source_d = d.test_d[idx]
        others = torch.tensor([[t for t in used if t != s] for s in used])
        row = torch.tensor([used.index(s) for s in source_d.tolist()])
        pick = torch.randint(len(used) - 1, (len(idx),), generator=generator)
        targets = others[row, pick]
        x = d.test_x[idx]
        return Conditions((x, targets), d.test_y[idx], x, targets, source_d)

    def curve_conditions(
        self, model: GenerativeModel, split: Split, n: int, generator: torch.Generator
    ) -> Conditions:
        """Training images of the model's other domains, all translated into the domain whose
        held-out images the validation split holds (the data set's own: `handwritten` of the
        typeset domains), so translations are scored like any model's samples (the other
        domains have no validation images). A model not working on that domain translates
        training images into its other domains as when sampled, and its figures then also
        measure how far those domains lie from the data set's images."""
        DOMAINS.check_split(model.name, split.domains is not None)
        d, used = split.domains, model_domains(model)
        own = data_domain(split)
        if own not in used:
            as_held_out = replace(d, test_x=d.train_x, test_y=d.train_y, test_d=d.train_d)
            return self.sampling_conditions(
                model, replace(split, domains=as_held_out), n, generator
            )
        pool = torch.nonzero(torch.isin(d.train_d, torch.tensor(used)) & (d.train_d != own))
        idx = pool.flatten()[_cycle(n, len(pool), generator)]
        x, targets = d.train_x[idx], torch.full((len(idx),), own)
        return Conditions((x, targets), d.train_y[idx], x, targets, d.train_d[idx])

    def probe_pairs(
        self, model: GenerativeModel, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, labels = random_pairs(model.meta, n, generator)
        ids = torch.tensor(model_domains(model))
        domains = ids[torch.randint(len(ids), (n,), generator=generator)]
        return x, torch.stack([domains, labels], dim=1) if model.uses_labels else domains

    def probe_condition(
        self, model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, n: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe images, each going to the next of the model's domains."""
        ids = model_domains(model)
        source = (y[:n, 0] if y.dim() == 2 else y[:n]).tolist()
        targets = torch.tensor([ids[(ids.index(s) + 1) % len(ids)] for s in source])
        return x[:n].to(device), targets.to(device)

    @torch.no_grad()
    def figure(self, model: GenerativeModel, split: Split, path: Path, seed: int) -> list[Path]:
        """Two domains: A -> B -> A and B -> A -> B; more: one input row into every domain."""
        g = torch.Generator().manual_seed(seed)
        levels, dev = model.meta.levels, model.device
        d, used = split.domains, model_domains(model)
        names = d.names

        def pick(dom: int, k: int) -> torch.Tensor:
            idx = torch.nonzero(d.test_d == dom).flatten()
            return d.test_x[idx[torch.randperm(len(idx), generator=g)[:k]]].to(dev)

        def to(x: torch.Tensor, dom: int) -> torch.Tensor:
            return model.translate(x, torch.full((len(x),), dom, device=dev)).cpu()

        if len(used) == 2:
            rows, labels = [], []
            for a, b in (used, used[::-1]):
                x = pick(a, COLUMNS)
                ab = to(x, b)
                rows += [x.cpu(), ab, to(ab.to(dev), a)]
                labels += [names[a], f"-> {names[b]}", f"-> {names[a]} (back)"]
            return [labelled_rows(rows, labels, levels, path)]
        per = max(1, COLUMNS // len(used))
        x = torch.cat([pick(dom, per) for dom in used])
        rows = [x.cpu()] + [to(x, dom) for dom in used]
        labels = ["input"] + [f"-> {names[t]}" for t in used]
        return [labelled_rows(rows, labels, levels, path)]

    def obeyed(
        self, model: GenerativeModel, split: Split, saved: Saved, protocol: Protocol, device: Device
    ) -> dict[str, Any]:
        """Did the translation reach the target domain, keep the digit, survive the round trip?"""
        d, k, levels = split.domains, split.meta.n_classes, split.meta.levels
        bs = protocol.batch_size
        images, targets = saved["images"], saved["targets"]
        sources, source_domains = saved["sources"], saved["source_domains"]
        net = clf.load_classifier(protocol.domain_classifier, device)
        labels, domains = clf.predict_joint(net, images, k)
        out: dict[str, Any] = {"domain_accuracy": M.agreement(domains, targets)}
        if len(d.train_y.unique()) > 1:  # user layouts carry no class labels
            out["label_preservation"] = M.agreement(labels, saved["labels"])
        with torch.no_grad():
            back = torch.cat(
                [
                    model.reconstruct_cycle(
                        sources[i : i + bs].to(device),
                        source_domains[i : i + bs].to(device),
                        targets[i : i + bs].to(device),
                    ).cpu()
                    for i in range(0, len(sources), bs)
                ]
            )
        out["cycle_error"] = M.reconstruction_error(sources, back, levels)
        return out

    def quality(
        self, split: Split, saved: Saved, protocol: Protocol, seed: int, device: Device
    ) -> dict[str, Any]:
        """Sample quality per target domain, against that domain's test images, averaged over
        target domains (means only: an average of per-domain spreads is not a spread)."""
        d, levels = split.domains, split.meta.levels
        images, targets = saved["images"], saved["targets"]
        scale = domain_features(d.train_x, levels, protocol, device)
        out: dict[str, Any] = {}
        per_target = []
        for t in targets.unique().tolist():
            to_t, reference = images[targets == t], d.test_x[d.test_d == t]
            q = domain_quality(to_t, reference, scale, levels, protocol, seed, device)
            out[f"fid_to_{d.names[t]}"] = q["fid"]
            per_target.append(q)
        out.update(mean_of(per_target))
        out["feature_extractor"] = protocol.space_name("domains")
        return out


KIND = DomainKind()
