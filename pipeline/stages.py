"""The DVC stages as functions: read params, call gen/, write outputs, log to MLflow.

File layout (the only place that knows it): data/prepared/, runs/, metrics.json.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gen import classifier as clf
from gen import metrics as M
from gen.conditions import sampling_conditions, training_data
from gen.data import Split, dataset_id, load, load_split, save_split
from gen.models.base import count_params
from gen.registry import build
from gen.trainer import load_checkpoint, model_from_checkpoint, pick_device, train
from pipeline import tracking
from pipeline.params import Params

PREPARED = Path("data/prepared")
RUNS = Path("runs")
CLASSIFIERS = RUNS / "classifiers"  # one DVC output: the domain classifier exists only with domains
CLASSIFIER = CLASSIFIERS / "classes.pt"
CLASSIFIER_METRICS = RUNS / "classifier.json"
DOMAIN_CLASSIFIER = CLASSIFIERS / "domains.pt"  # (domain, class) pairs; translation metrics
CHECKPOINT = RUNS / "model.pt"
RUN_INFO = RUNS / "run.json"
SAMPLES = RUNS / "samples.pt"
FIGURES = RUNS / "figures"
SAMPLE_GRID = FIGURES / "samples.png"
SAMPLE_INFO = RUNS / "samples.json"
METRICS = Path("metrics.json")
WIP = RUNS / "wip"  # resumable checkpoints; not a DVC output, so DVC never deletes them

METRIC_KEYS = (
    "model",
    "dataset",
    "bpd",
    "elbo_bpd",
    "fid",
    "is_mean",
    "is_std",
    "kid_mean",
    "precision",
    "recall",
    "train_seconds",
    "sample_images_per_s",
    "params",
    "condition_accuracy",
    "patch_error",
    "label_preservation",
    "domain_accuracy",
    "cycle_error",
)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def prepare(p: Params) -> dict[str, Any]:
    split = load(p.data, seed=p.seed)
    if PREPARED.exists():
        shutil.rmtree(PREPARED)
    save_split(split, PREPARED)
    return {"train": len(split.train_x), "test": len(split.test_x), **split.meta.__dict__}


def train_classifier(p: Params) -> dict[str, Any]:
    split = load_split(PREPARED)
    device = pick_device(p.train.device)
    t0 = time.perf_counter()
    net = clf.train_classifier(
        split.train_x,
        split.train_y,
        split.meta.levels,
        split.meta.n_classes,
        p.classifier,
        seed=p.seed,
        device=device,
    )
    net = net.cpu()
    if CLASSIFIERS.exists():
        shutil.rmtree(CLASSIFIERS)
    CLASSIFIERS.mkdir(parents=True)
    torch.save(clf.classifier_checkpoint(net, p.classifier), CLASSIFIER)
    out = {
        "classifier_test_accuracy": clf.accuracy(net, split.test_x, split.test_y),
        "classifier_train_accuracy": clf.accuracy(net, split.train_x, split.train_y),
        "classifier_seconds": time.perf_counter() - t0,
    }
    if split.domains is not None:
        out.update(_train_domain_classifier(p, split, device))
    write_json(CLASSIFIER_METRICS, out)
    return out


def _train_domain_classifier(p: Params, split: Split, device: torch.device) -> dict[str, float]:
    """One classifier of (domain, class) pairs: it tells both what digit a translated image
    shows and which domain it looks like, and its features score translations (FID)."""
    d, k = split.domains, split.meta.n_classes
    cfg = replace(p.classifier, epochs=p.classifier.domain_epochs)
    t0 = time.perf_counter()
    net = clf.train_classifier(
        d.train_x,
        d.train_d * k + d.train_y,
        split.meta.levels,
        len(d.names) * k,
        cfg,
        p.seed,
        device,
    ).cpu()
    torch.save(clf.classifier_checkpoint(net, cfg), DOMAIN_CLASSIFIER)
    labels, domains = clf.predict_joint(net, d.test_x, k)
    return {
        "domain_classifier_domain_accuracy": float((domains == d.test_d).float().mean()),
        "domain_classifier_label_accuracy": float((labels == d.test_y).float().mean()),
        "domain_classifier_seconds": time.perf_counter() - t0,
    }


def _run_params(p: Params) -> dict[str, Any]:
    return {
        "model": p.model,
        "seed": p.seed,
        "data": p.raw.get("data", {}),
        "train": p.raw.get("train", {}),
        p.model: p.model_section(),
    }


def train_model(p: Params) -> dict[str, Any]:
    split = load_split(PREPARED)
    device = pick_device(p.train.device)
    model = build(p.model, p.model_section(), split.meta)
    ds = dataset_id(p.data)
    run_id = tracking.start_run(ds, p.model, model.family, _run_params(p))
    write_json(RUN_INFO, {"run_id": run_id, "model": p.model, "dataset": ds})
    wip = WIP / f"{p.model}.pt"
    train_x, train_y = training_data(model, split)

    def log(step: int, row: dict[str, float]) -> None:
        tracking.log_metrics(run_id, {f"train/{k}": v for k, v in row.items()}, step)

    try:
        result = train(
            model,
            train_x,
            train_y,
            seed=p.seed,
            device=device,
            callback=log,
            checkpoint=wip,
            checkpoint_every=p.train.checkpoint_every,
            log_every=p.train.log_every,
            precision=p.train.precision,
        )
    except BaseException:
        tracking.finish(run_id, "FAILED")  # the wip checkpoint stays: the next run resumes from it
        raise
    shutil.copyfile(wip, CHECKPOINT)
    summary = {
        "train_seconds": result.seconds,
        "train_images_per_s": result.images_per_s,
        "train_steps": result.steps,
        "params": count_params(model),
    }
    tracking.log_metrics(run_id, summary, result.steps)
    # Unpaired translation normally sees no class labels; the report marks a run that did.
    labels = "yes" if model.uses_labels else "no"
    tracking.set_tags(run_id, {"device": str(device), "class_labels": labels})
    return summary


def _run_id(p: Params, family: str) -> str:
    """The run the train stage made; a new one if that run is gone (deleted store, run cache)."""
    info = json.loads(RUN_INFO.read_text()) if RUN_INFO.exists() else {}
    run_id = info.get("run_id")
    if run_id and tracking.run_exists(run_id):
        return run_id
    run_id = tracking.start_run(dataset_id(p.data), p.model, family, _run_params(p))
    write_json(RUN_INFO, {**info, "run_id": run_id})
    return run_id


def sample(p: Params) -> dict[str, Any]:
    from gen.plots import save_grid

    ckpt = load_checkpoint(CHECKPOINT)
    device = pick_device(p.train.device)
    model = model_from_checkpoint(ckpt, device)
    run_id = _run_id(p, model.family)
    split = load_split(PREPARED)
    g = torch.Generator().manual_seed(p.seed)
    n, bs = p.eval.n_samples, p.eval.batch_size
    conds = sampling_conditions(model, split, n, g)
    t0 = time.perf_counter()
    chunks = []
    for i in range(0, n, bs):
        j = min(n, i + bs)
        if conds is None:
            chunks.append(model.sample(j - i, g).cpu())
        else:
            chunks.append(model.sample(j - i, g, _take(conds.value, i, j, device)).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x = torch.cat(chunks)
    saved = {"images": x}
    if conds is not None:
        fields = ("labels", "sources", "targets", "source_domains")
        saved.update({k: getattr(conds, k) for k in fields if getattr(conds, k) is not None})
    torch.save(saved, SAMPLES)
    if FIGURES.exists():
        shutil.rmtree(FIGURES)
    save_grid(x[:100], model.meta.levels, SAMPLE_GRID)
    extra = model_figures(model, split, FIGURES, p.seed)
    out = {"sample_images_per_s": n / seconds, "sample_seconds": seconds}
    write_json(SAMPLE_INFO, out)
    tracking.log_metrics(run_id, out)
    tracking.log_artifact(run_id, SAMPLE_GRID, "samples")
    for path in extra:
        tracking.log_artifact(run_id, path, "figures")
    return out


def _take(value: Any, i: int, j: int, device: torch.device) -> Any:
    """Rows i:j of a condition (a tensor or a tuple of tensors), on `device`."""
    if isinstance(value, tuple):
        return tuple(_take(v, i, j, device) for v in value)
    return value[i:j].to(device)


def model_figures(model, split: Split, folder: Path, seed: int) -> list[Path]:
    """The figures a model's capabilities allow: latent interpolation, code traversal, codes,
    and for conditional models their inputs beside their outputs."""
    from gen import plots

    made = []
    levels = model.meta.levels
    test_x = split.test_x
    if model.condition is not None:
        made.append(plots.condition_figure(model, split, folder / "conditions.png", seed))
    unconditional = model.condition is None
    if unconditional and hasattr(model, "sample_latent") and hasattr(model, "decode_latent"):
        g = torch.Generator().manual_seed(seed)
        images = plots.interpolation(model, pairs=6, steps=10, generator=g)
        made.append(plots.save_grid(images, levels, folder / "interpolation.png", nrow=10))
    if hasattr(model, "traversal"):
        g = torch.Generator().manual_seed(seed)
        steps = 10
        images = model.traversal(steps, generator=g)
        made.append(plots.save_grid(images, levels, folder / "traversal.png", nrow=steps))
    if hasattr(model, "prior_sample") and hasattr(model, "encode"):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            codes = model.encode(test_x.to(model.device)).cpu()
            prior = model.prior_sample(len(codes), generator=g).cpu()
        made.append(plots.scatter_codes(codes, prior, folder / "codes.png"))
    return made


def evaluate(p: Params) -> dict[str, Any]:
    split = load_split(PREPARED)
    ckpt = load_checkpoint(CHECKPOINT)
    device = pick_device(p.train.device)
    model = model_from_checkpoint(ckpt, device)
    run_id = _run_id(p, model.family)
    saved = torch.load(SAMPLES, weights_only=True)
    samples = saved["images"]
    test, bs = split.test_x, p.eval.batch_size
    torch.manual_seed(p.seed)
    out: dict[str, Any] = {k: None for k in METRIC_KEYS}
    out.update(model=ckpt["name"], dataset=dataset_id(p.data), params=count_params(model))
    out["train_seconds"] = ckpt.get("seconds")
    out["train_images_per_s"] = (
        ckpt["images_seen"] / ckpt["seconds"] if ckpt.get("seconds") else None
    )
    if hasattr(model, "log_prob"):
        out["bpd"] = M.dataset_bpd(model.log_prob, test, bs, device)
        out["bpd_kind"] = "exact"
    elif hasattr(model, "iwae_bound"):
        k = p.eval.iwae_k
        out["bpd"] = M.dataset_bpd(lambda x: model.iwae_bound(x, k), test, max(1, bs // 4), device)
        out["elbo_bpd"] = M.dataset_bpd(model.elbo, test, bs, device)
        out["bpd_kind"] = f"iwae-{k}"
    exact = split.meta.extra.get("exact_test_bpd")
    if exact is not None:
        out["exact_test_bpd"] = exact
    if hasattr(model, "reconstruct"):
        with torch.no_grad():
            rec = torch.cat(
                [
                    model.reconstruct(test[i : i + bs].to(device)).cpu()
                    for i in range(0, len(test), bs)
                ]
            )
        out["reconstruction_error"] = M.reconstruction_error(test, rec, split.meta.levels)
    if hasattr(model, "sample_with_codes"):
        net = clf.load_classifier(CLASSIFIER, device)
        g = torch.Generator().manual_seed(p.seed)
        with torch.no_grad():
            images, codes = model.sample_with_codes(p.eval.n_samples, generator=g)
        predicted = clf.predict(net, images.cpu())
        out["code_accuracy"] = M.code_accuracy(codes.cpu(), predicted, split.meta.n_classes)
    extractor = p.eval.feature_extractor
    if model.condition == "domain":
        out.update(_translation_metrics(model, split, saved, p, device))
    else:
        if model.condition == "caption":
            net = clf.load_classifier(CLASSIFIER, device)
            out["condition_accuracy"] = M.agreement(clf.predict(net, samples), saved["labels"])
        if model.condition == "image":
            sources = saved["sources"]
            with torch.no_grad():
                mask = model.patch_mask(sources.to(device)).cpu()
            out["patch_error"] = M.masked_error(sources, samples, mask, split.meta.levels)
        weights = CLASSIFIER if extractor == "classifier" else p.eval.inception_weights
        out.update(
            M.sample_quality(
                samples,
                test,
                split.meta.levels,
                extractor,
                weights,
                p.eval.kid_subset_size,
                bs,
                device,
            )
        )
        out["feature_extractor"] = extractor
    if CLASSIFIER_METRICS.exists():
        out.update(json.loads(CLASSIFIER_METRICS.read_text()))
    out["sample_images_per_s"] = json.loads(SAMPLE_INFO.read_text())["sample_images_per_s"]
    write_json(METRICS, out)
    numbers = {
        k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    tracking.log_metrics(run_id, numbers)
    tracking.set_tags(
        run_id,
        {
            "feature_extractor": out["feature_extractor"],
            "bpd_kind": str(out.get("bpd_kind") or "n/a"),
        },
    )
    tracking.log_artifact(run_id, METRICS)
    tracking.log_artifact(run_id, CHECKPOINT, "checkpoint")
    tracking.finish(run_id, "FINISHED")
    return out


def _translation_metrics(
    model, split: Split, saved: dict[str, torch.Tensor], p: Params, device: torch.device
) -> dict[str, Any]:
    """Did the translation keep the digit, reach the target domain, and survive the round
    trip? Sample quality is measured per target domain, against that domain's test images."""
    d, k, levels, bs = split.domains, split.meta.n_classes, split.meta.levels, p.eval.batch_size
    images, targets = saved["images"], saved["targets"]
    sources, source_domains = saved["sources"], saved["source_domains"]
    net = clf.load_classifier(DOMAIN_CLASSIFIER, device)
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
    extractor = p.eval.feature_extractor
    weights = DOMAIN_CLASSIFIER if extractor == "classifier" else p.eval.inception_weights
    per_target = []
    for t in targets.unique().tolist():
        q = M.sample_quality(
            images[targets == t],
            d.test_x[d.test_d == t],
            levels,
            extractor,
            weights,
            p.eval.kid_subset_size,
            bs,
            device,
        )
        out[f"fid_to_{d.names[t]}"] = q["fid"]
        per_target.append(q)
    for key in per_target[0]:
        out[key] = sum(q[key] for q in per_target) / len(per_target)
    out["feature_extractor"] = "domain-classifier" if extractor == "classifier" else extractor
    return out
