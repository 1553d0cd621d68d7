"""The DVC stages as functions: read params, call gen/, write outputs, log to MLflow. The train
stage, with its run bookkeeping across attempts, is in `pipeline.train_stage`.

File layout (the only place that knows it): data/prepared/, runs/, metrics.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gen import classifier as clf
from gen import evaluation as E
from gen.atomic import save_tensors, staged, write_text
from gen.checkpoint import load_checkpoint
from gen.conditions import draw
from gen.data import Split, dataset_id, load_split, save_split
from gen.datasets import load
from gen.features import resolve_weights
from gen.models.base import count_params
from gen.runtime import pick_device
from pipeline import checkpoints, logged_models, provenance, tracking
from pipeline.params import Params

PREPARED = Path("data/prepared")
RUNS = Path("runs")
CLASSIFIERS = RUNS / "classifiers"  # one DVC output: the domain classifier exists only with domains
CLASSIFIER = CLASSIFIERS / "classes.pt"
CLASSIFIER_METRICS = RUNS / "classifier.json"
DOMAIN_CLASSIFIER = CLASSIFIERS / "domains.pt"  # (domain, class) pairs; translation metrics
CHECKPOINT = RUNS / "model.pt"
CURVES = RUNS / "curves"  # DVC plots: a CSV per loss term (and val-bpd), step and value
RUN_INFO = RUNS / "run.json"
SAMPLES = RUNS / "samples.pt"
FIGURES = RUNS / "figures"
SAMPLE_GRID = FIGURES / "samples.png"
SAMPLE_INFO = RUNS / "samples.json"
METRICS = Path("metrics.json")
WIP = RUNS / "wip"  # resumable checkpoints; not a DVC output, so DVC never deletes them

REFERENCE = RUNS / "reference.json"  # the `data` rows: real images scored like samples
# Threads of the ruler (the evaluation classifier): one, whatever the machine, so its weights
# are the same bytes everywhere (float sums depend on how work is split over threads).
RULER_THREADS = 1
# ... and the vector instructions it is trained with. Float sums also follow the CPU's vector
# width, which ATen's kernels, oneDNN and MKL each pick when the process starts (AVX2 and
# AVX-512 kernels trained different rulers, so runs from two machines never shared a
# protocol), so all three are held to what every x86-64 CPU has. Torch reads them only at
# start-up: `genbench classifier` starts a process with them.
RULER_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "COMPATIBLE",
}


def ruler_pinned() -> bool:
    """Whether this process started with `RULER_ENV`, so it trains the same ruler anywhere."""
    return all(os.environ.get(k) == v for k, v in RULER_ENV.items())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def use_threads(p: Params) -> None:
    torch.set_num_threads(p.train.threads)


_IMPORTED = time.monotonic()
STAGE_TIMES = ("train", "sample", "evaluate")  # metrics time/<stage>: where a benchmark's hour goes


def process_seconds() -> float:
    """Seconds since this process started, start-up (interpreter, imports) included: what a
    DVC stage costs beside the work itself. Linux reads /proc; elsewhere, since import."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def log_stage_time(run_id: str, stage: str) -> None:
    tracking.log_metrics(run_id, {f"time/{stage}": process_seconds()})


def prepare(p: Params) -> dict[str, Any]:
    split = load(p.data)
    with staged(PREPARED) as (folder,):  # the earlier data stay until the new are whole
        save_split(split, folder)
    sizes = {"train": len(split.train_x), "val": len(split.val_x), "test": len(split.test_x)}
    return {**sizes, **split.meta.__dict__}


def train_classifier(p: Params) -> dict[str, Any]:
    """The ruler: trained on the CPU with one thread, its own seed and `RULER_ENV` (when
    started by `genbench classifier`), so every machine measures with the same weights (their
    hash is part of the protocol fingerprint). With `classifier.protocol` set, the ruler is
    that file's instead (pipeline.protocol.use): no training."""
    if p.classifier.protocol is not None:
        from pipeline import protocol

        return protocol.use(p)
    split = load_split(PREPARED)
    device = torch.device("cpu")
    torch.set_num_threads(RULER_THREADS)
    t0 = time.perf_counter()
    net = clf.train_classifier(
        split.train_x,
        split.train_y,
        split.meta.levels,
        split.meta.n_classes,
        p.classifier,
        seed=p.classifier.seed,
        device=device,
    )
    net = net.cpu()
    out = {
        "classifier_test_accuracy": clf.accuracy(net, split.test_x, split.test_y),
        "classifier_train_accuracy": clf.accuracy(net, split.train_x, split.train_y),
        "classifier_seconds": time.perf_counter() - t0,
        "classifier_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
    }
    # The earlier rulers stay until the new ones and their figures are whole.
    with staged(CLASSIFIERS, CLASSIFIER_METRICS) as (folder, metrics):
        folder.mkdir()
        save_tensors(clf.classifier_checkpoint(net, p.classifier), folder / CLASSIFIER.name)
        if split.domains is not None:
            domains = folder / DOMAIN_CLASSIFIER.name
            out.update(_train_domain_classifier(p, split, device, domains))
        write_json(metrics, out)
    return out


def _train_domain_classifier(
    p: Params, split: Split, device: torch.device, path: Path
) -> dict[str, float]:
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
        p.classifier.seed,
        device,
    ).cpu()
    save_tensors(clf.classifier_checkpoint(net, cfg), path)
    labels, domains = clf.predict_joint(net, d.test_x, k)
    return {
        "domain_classifier_domain_accuracy": float((domains == d.test_d).float().mean()),
        "domain_classifier_label_accuracy": float((labels == d.test_y).float().mean()),
        "domain_classifier_seconds": time.perf_counter() - t0,
    }


def run_params(p: Params) -> dict[str, Any]:
    """The run's params: the model's section under its own name (`vae.lr`) and under the
    shared prefix `model.` (`model.lr`), so MLflow's compare view lines up the same knobs
    across models."""
    section = p.model_section()
    shared = {f"model.{k}": v for k, v in tracking.flatten(section).items()}
    return {
        "model": p.model,
        "seed": p.seed,
        "data": p.raw.get("data", {}),
        "train": p.raw.get("train", {}),
        p.model: section,
        **shared,
    }


def _run_id(p: Params, ckpt: dict[str, Any], family: str, stage: str) -> str:
    """The run the train stage made, once it is checked to be the checkpoint's (marked RUNNING
    again if an earlier sample or evaluate attempt failed in it; a FINISHED one stays so); a
    new one, tagged from the checkpoint, if that run is gone (deleted store, run cache)."""
    info = checkpoints.read_json(RUN_INFO, "train again (`genbench train`)", missing_ok=True)
    run_id = info.get("run_id")
    status = tracking.run_status(run_id) if run_id else None
    if status is not None:
        checkpoints.check_run(ckpt, CHECKPOINT, run_id, tracking.run_tags(run_id))
        if status in ("FAILED", "KILLED"):
            tracking.reopen(run_id)
        return run_id
    seed = ckpt.get("seed", p.seed)
    tags = checkpoints.run_tags(ckpt)
    run_id = tracking.start_run(dataset_id(p.data), ckpt["name"], family, run_params(p), seed, tags)
    with tracking.failing(run_id, stage):
        write_json(RUN_INFO, {**info, "run_id": run_id})
    return run_id


def _checked(p: Params, device: torch.device) -> tuple[Split, dict[str, Any], Any]:
    """The prepared data, and the checkpoint and its model checked against the params and
    that data: before anything is logged."""
    ckpt = load_checkpoint(CHECKPOINT)  # a corrupt or refused file is said first
    split = load_split(PREPARED)
    data_hash = provenance.split_hash(PREPARED)
    model = checkpoints.checked_model(p, CHECKPOINT, ckpt, split, data_hash, device)
    return split, ckpt, model


def sample(p: Params) -> dict[str, Any]:
    from gen.plots import save_grid

    use_threads(p)
    device = pick_device(p.train.device)
    split, ckpt, model = _checked(p, device)
    run_id = _run_id(p, ckpt, model.family, "sample")
    # Samples, their figures and figures' file are replaced together once logged, or not at all.
    outputs = staged(SAMPLES, SAMPLE_INFO, FIGURES)
    with tracking.failing(run_id, "sample"), outputs as (samples, info, figures):
        g = torch.Generator().manual_seed(p.seed)
        n, bs = p.eval.n_samples, p.eval.batch_size
        conds = model.condition.sampling_conditions(model, split, n, g)
        t0 = time.perf_counter()
        x = draw(model, n, g, conds, bs, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        saved = {"images": x, checkpoints.SAMPLES_KEY: checkpoints.file_digest(CHECKPOINT)}
        if conds is not None:
            fields = ("labels", "sources", "targets", "source_domains")
            saved.update({k: getattr(conds, k) for k in fields if getattr(conds, k) is not None})
        save_tensors(saved, samples)
        grid = save_grid(x[:100], model.meta.levels, figures / SAMPLE_GRID.name)
        extra = model_figures(model, split, figures, p.seed)
        out = {"sample_images_per_s": n / seconds, "sample_seconds": seconds}
        write_json(info, out)
        tracking.log_artifact(run_id, grid, "samples")
        for path in extra:
            tracking.log_artifact(run_id, path, "figures")
        tracking.log_metrics(run_id, {**out, "time/sample": process_seconds()})  # the last write
        return out


def model_figures(model, split: Split, folder: Path, seed: int) -> list[Path]:
    """The figures a model's condition kind draws (its inputs beside its outputs) and those its
    capabilities allow: latent interpolation, code traversal, codes against the prior."""
    from gen import plots

    levels = model.meta.levels
    test_x = split.test_x
    caps = model.capabilities
    made = model.condition.figure(model, split, folder / "conditions.png", seed)
    if caps.latent:
        g = torch.Generator().manual_seed(seed)
        images = plots.interpolation(model, pairs=6, steps=10, generator=g)
        made.append(plots.save_grid(images, levels, folder / "interpolation.png", nrow=10))
    if caps.traversal:
        g = torch.Generator().manual_seed(seed)
        steps = 10
        images = model.traversal(steps, generator=g)
        made.append(plots.save_grid(images, levels, folder / "traversal.png", nrow=steps))
    if caps.prior:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            codes = model.encode(test_x.to(model.device)).cpu()
            prior = model.prior_sample(len(codes), generator=g).cpu()
        made.append(plots.scatter_codes(codes, prior, folder / "codes.png"))
    return made


def eval_protocol(p: Params) -> E.Protocol:
    """How samples are scored: the `eval:` section and the rulers (the final evaluation, the
    data row and the train stage's quality curve); a feature extractor's weights file is checked
    here, before any work (a missing DINOv2 file: one line saying which to download and where)."""
    e = p.eval
    return E.Protocol(
        extractor=e.feature_extractor,
        classifier=CLASSIFIER,
        domain_classifier=DOMAIN_CLASSIFIER if DOMAIN_CLASSIFIER.exists() else None,
        feature_weights=resolve_weights(e.feature_extractor, e.weights()),
        n_samples=e.n_samples,
        iwae_k=e.iwae_k,
        batch_size=e.batch_size,
        kid_subset_size=e.kid_subset_size,
        n_boot=e.n_boot,
        reference_draws=e.reference_draws,
    )


def fingerprint(p: Params, protocol: E.Protocol | None = None) -> dict[str, str]:
    """The protocol fingerprint of the data, rulers and eval params (`protocol.*` tags)."""
    weights = (protocol or eval_protocol(p)).feature_weights
    return provenance.fingerprint(
        p.raw.get("data", {}),
        p.raw.get("eval", {}),
        PREPARED,
        CLASSIFIERS,
        Path(weights) if weights else None,
    )


def _numbers(out: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _stale(run_id: str, out: dict[str, Any]) -> dict[str, float]:
    """NaN (n/a in the report) for the feature-space figures the run has from an earlier
    evaluation that this one has not (the Inception score of the classifier's space, when the
    run is scored again in DINOv2's), so no figure of another space stays in the run."""
    have = set(tracking.metric_keys(run_id))
    return {k: math.nan for k in E.SPACE_KEYS if k in have and out.get(k) is None}


def evaluate(p: Params) -> dict[str, Any]:
    protocol = eval_protocol(p)
    use_threads(p)
    device = pick_device(p.train.device)
    split, ckpt, model = _checked(p, device)
    saved = checkpoints.load_samples(SAMPLES, CHECKPOINT)
    drawn = checkpoints.read_json(SAMPLE_INFO, "run `genbench sample` again")
    run_id = _run_id(p, ckpt, model.family, "evaluate")
    # A failure from here on logs no metric rows and leaves metrics.json as it was; the
    # metrics are the run's last write before it is marked FINISHED.
    with tracking.failing(run_id, "evaluate"), staged(METRICS) as (metrics,):
        out = E.evaluate_model(model, split, saved, protocol, p.seed, device)
        out.update(model=ckpt["name"], dataset=dataset_id(p.data), params=count_params(model))
        out["seed"] = ckpt.get("seed", p.seed)
        out["train_seconds"] = ckpt.get("seconds")
        seen, seconds = ckpt.get("images_seen"), ckpt.get("seconds")
        out["train_images_per_s"] = seen / seconds if seen and seconds else None
        # The compute axis (gen/flops.py): what training spent, beside train_seconds.
        flops, steps = ckpt.get("flops"), ckpt.get("step")
        out.update(train_flops=flops, train_steps=steps, train_images=seen)
        out["flops_per_step"] = None if flops is None else flops / steps if steps else 0.0
        vals = [h["val/bpd"] for h in ckpt.get("history", []) if "val/bpd" in h]
        out["val_bpd"] = vals[-1] if vals else None
        exact = split.meta.extra.get("exact_test_bpd")
        if exact is not None:
            out["exact_test_bpd"] = exact
        if CLASSIFIER_METRICS.exists():
            out.update(json.loads(CLASSIFIER_METRICS.read_text()))
        out["sample_images_per_s"] = drawn.get("sample_images_per_s")
        fp = fingerprint(p, protocol)
        out["protocol"] = fp["protocol"]
        write_json(metrics, out)
        tracking.set_tags(
            run_id,
            {
                "feature_extractor": out["feature_extractor"],
                "bpd_kind": str(out.get("bpd_kind") or "n/a"),
                **fp,
            },
        )
        tracking.log_artifact(run_id, metrics)
        tracking.log_artifact(run_id, CHECKPOINT, "checkpoint")
        logged_models.log_model(run_id, model)
        figures = {**_stale(run_id, out), **_numbers(out), "time/evaluate": process_seconds()}
        tracking.log_metrics(run_id, figures)
        tracking.finish(run_id, "FINISHED")
        return out


def reference(p: Params) -> dict[str, Any]:
    """The `data` rows: real training images scored like samples, one MLflow run per protocol
    (model `data`), so every report shows the floor beside the models."""
    protocol = eval_protocol(p)
    use_threads(p)
    split = load_split(PREPARED)
    device = pick_device(p.train.device)
    rows = E.reference_rows(split, protocol, device)
    fp = fingerprint(p, protocol)
    ds = dataset_id(p.data)
    out = {"dataset": ds, "protocol": fp["protocol"], "draws": rows}
    run_id = tracking.start_run(
        ds, "data", "data", {"data": p.raw.get("data", {}), "eval": p.raw.get("eval", {})}, None
    )
    with tracking.failing(run_id, "reference"), staged(REFERENCE) as (path,):
        write_json(path, out)
        tracking.set_tags(run_id, fp)
        tracking.log_artifact(run_id, path)
        for space, draws in rows.items():
            for i, row in enumerate(draws):
                tracking.log_metrics(run_id, {f"{space}/{k}": v for k, v in row.items()}, i)
        tracking.finish(run_id, "FINISHED")
    return {"protocol": fp["protocol"], "draws": {k: len(v) for k, v in rows.items()}}
