"""The DVC stages as functions: read params, call gen/, write outputs, log to MLflow.

File layout (the only place that knows it): data/prepared/, runs/, metrics.json.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from gen import classifier as clf
from gen import metrics as M
from gen.data import dataset_id, load, load_split, save_split
from gen.models.base import count_params
from gen.registry import build
from gen.trainer import load_checkpoint, model_from_checkpoint, pick_device, train
from pipeline import tracking
from pipeline.params import Params

PREPARED = Path("data/prepared")
RUNS = Path("runs")
CLASSIFIER = RUNS / "classifier.pt"
CLASSIFIER_METRICS = RUNS / "classifier.json"
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
    RUNS.mkdir(exist_ok=True)
    torch.save(clf.classifier_checkpoint(net, p.classifier), CLASSIFIER)
    out = {
        "classifier_test_accuracy": clf.accuracy(net, split.test_x, split.test_y),
        "classifier_train_accuracy": clf.accuracy(net, split.train_x, split.train_y),
        "classifier_seconds": time.perf_counter() - t0,
    }
    write_json(CLASSIFIER_METRICS, out)
    return out


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

    def log(step: int, row: dict[str, float]) -> None:
        tracking.log_metrics(run_id, {f"train/{k}": v for k, v in row.items()}, step)

    try:
        result = train(
            model,
            split.train_x,
            split.train_y,
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
    tracking.set_tags(run_id, {"device": str(device)})
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
    g = torch.Generator().manual_seed(p.seed)
    n, bs = p.eval.n_samples, p.eval.batch_size
    t0 = time.perf_counter()
    chunks = [model.sample(min(bs, n - i), g).cpu() for i in range(0, n, bs)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x = torch.cat(chunks)
    torch.save(x, SAMPLES)
    if FIGURES.exists():
        shutil.rmtree(FIGURES)
    save_grid(x[:100], model.meta.levels, SAMPLE_GRID)
    extra = model_figures(model, load_split(PREPARED).test_x, FIGURES, p.seed)
    out = {"sample_images_per_s": n / seconds, "sample_seconds": seconds}
    write_json(SAMPLE_INFO, out)
    tracking.log_metrics(run_id, out)
    tracking.log_artifact(run_id, SAMPLE_GRID, "samples")
    for path in extra:
        tracking.log_artifact(run_id, path, "figures")
    return out


def model_figures(model, test_x: torch.Tensor, folder: Path, seed: int) -> list[Path]:
    """The figures a model's capabilities allow: latent interpolation, code traversal, codes."""
    from gen import plots

    made = []
    levels = model.meta.levels
    if hasattr(model, "sample_latent") and hasattr(model, "decode_latent"):
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
    samples = torch.load(SAMPLES, weights_only=True)
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
    weights = CLASSIFIER if extractor == "classifier" else p.eval.inception_weights
    out.update(
        M.sample_quality(
            samples, test, split.meta.levels, extractor, weights, p.eval.kid_subset_size, bs, device
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
        run_id, {"feature_extractor": extractor, "bpd_kind": str(out.get("bpd_kind") or "n/a")}
    )
    tracking.log_artifact(run_id, METRICS)
    tracking.log_artifact(run_id, CHECKPOINT, "checkpoint")
    tracking.finish(run_id, "FINISHED")
    return out
