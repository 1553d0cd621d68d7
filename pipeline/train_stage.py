"""The train stage: train `p.model` and keep its MLflow run straight across attempts (a run
resumed with its checkpoint, stale attempts closed, each metric point logged once), then write
the checkpoint and the curves DVC plots. Every run logs its compute (`compute/flops`,
`compute/images`, `compute/steps`, `compute/seconds`) and its sample quality on the validation
split along training (`val/fid` ...: gen/quality_curve.py). The file layout comes from
`pipeline.stages`."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gen import distributed
from gen import metrics as M
from gen.atomic import staged
from gen.checkpoint import resume_step, run_identity
from gen.data import Split, dataset_id, load_split
from gen.models.base import GenerativeModel, count_params
from gen.quality_curve import ValidationQuality, curve_steps
from gen.registry import build
from gen.runtime import deterministic_mode, pick_device
from gen.trainer import train
from pipeline import checkpoints, provenance, tracking
from pipeline.curves import write_curve, write_quality_curve
from pipeline.params import Params
from pipeline.stages import (
    CHECKPOINT,
    CLASSIFIER,
    CURVES,
    PREPARED,
    RUN_INFO,
    RUNS,
    WIP,
    eval_protocol,
    log_stage_time,
    run_params,
    use_threads,
    write_json,
)


def train_model(p: Params) -> dict[str, Any]:
    """Train `p.model`; under torchrun (`genbench train` with train.nproc > 1) this process is
    one rank of a process group, and only rank 0 talks to MLflow and writes the outputs."""
    if not distributed.launched():
        return _train_model(p, pick_device(p.train.device))
    with distributed.process_group(p.train.device) as device:
        return _train_model(p, device)


def _train_model(p: Params, device: torch.device) -> dict[str, Any]:
    use_threads(p)
    split = load_split(PREPARED)
    for folder in (RUNS, WIP):  # a path in the way fails here, before any run is made
        folder.mkdir(parents=True, exist_ok=True)
    deterministic_mode()  # before this process's first CUDA call
    torch.manual_seed(p.seed)  # building a model draws its initial weights
    model = build(p.model, p.model_section(), split.meta)
    for key, (asked, used, why) in model.adjusted.items():
        print(f"note: {p.model}.{key}={asked} rounded up to {used} ({why})", file=sys.stderr)
    ds = dataset_id(p.data)
    train_x, train_y = model.condition.training_data(model, split)
    made_by = {
        "code": provenance.code_hash(),
        "data": provenance.split_hash(PREPARED),
        **provenance.model_code(p.model),  # a plug-in's package, version and code
    }
    wip = WIP / f"{p.model}.pt"
    # A checkpoint resumes only with the curve settings it was made with: a curve continues.
    trained_by = {**made_by, "curve": f"{p.eval.curve_points}x{p.eval.curve_samples}"}
    options = p.train.options(p.seed, device, wip, trained_by)  # the same on every rank
    validate = _validation(model, split, p.eval.batch_size, device)
    if distributed.rank_and_world()[0] > 0:  # trains in step with rank 0, which writes it all
        train(model, train_x, train_y, options, validate=validate)
        return {}
    curve_at = curve_steps(model.cfg.steps, p.eval.curve_points) if model.phases else ()
    t0 = time.perf_counter()
    curve = _curve(p, model, split, device) if curve_at else None
    curve_setup = time.perf_counter() - t0  # the validation and training features, once
    identity = run_identity(model, p.seed, trained_by)
    resumes_at = resume_step(wip, identity, model)  # checked to fit before its run is touched
    run_id = _resumed_run(wip, resumes_at, identity)
    done: dict[str, int] = {}
    if run_id is not None:  # an interrupted attempt: its run goes on, its curve continues
        tracking.reopen(run_id)
        done = tracking.last_steps(run_id)
    else:
        for old in (wip, wip.with_suffix(".json")):
            old.unlink(missing_ok=True)
        params = used_params(run_params(p), p.model, model)
        config = {checkpoints.CONFIG_TAG: checkpoints.config_digest(p.model, identity["config"])}
        tags = {**made_by, **config}  # what is trained, as built from the params read once
        run_id = tracking.start_run(ds, p.model, model.family, params, p.seed, tags)
        with tracking.failing(run_id, "train"):  # a signal from here on marks the new run KILLED
            write_json(wip.with_suffix(".json"), {"run_id": run_id})
            tracking.log_dataset(run_id, ds, made_by["data"], PREPARED.as_posix(), _profile(split))
            # Attempts at the same model, seed, code and data that were killed with nothing
            # left to resume: they must not show as RUNNING forever.
            same = {"model": p.model, "seed": str(p.seed), **made_by}
            tracking.close_stale(ds, same, keep=run_id)
    info = {"run_id": run_id, "model": p.model, "dataset": ds, "seed": p.seed}

    def log(step: int, row: dict[str, float]) -> None:
        named = {
            k if k.startswith(("val/", "compute/")) else f"train/{k}": v for k, v in row.items()
        }
        # Points the interrupted attempt logged after its last checkpoint are logged once.
        new = {k: v for k, v in named.items() if step > done.get(k, -1)}
        tracking.log_metrics(run_id, new, step)

    # The wip checkpoint stays: the next attempt resumes from it. The checkpoint and curves are
    # replaced together, once the run has all it logs.
    outputs = staged(CHECKPOINT, CURVES)
    with tracking.failing(run_id, "train"), outputs as (checkpoint, curves):
        write_json(RUN_INFO, info)
        result = train(
            model,
            train_x,
            train_y,
            options,
            callback=log,
            validate=validate,
            compute=True,
            curve=curve,
            curve_at=curve_at,
        )
        shutil.copyfile(wip, checkpoint)
        summary = {
            "train_seconds": result.seconds,
            "train_images_per_s": result.images_per_s,
            "train_steps": result.steps,
            "train_flops": result.flops,
            "flops_per_step": result.flops / result.steps if result.steps else 0.0,
            "params": count_params(model),
        }
        vals = [h["val/bpd"] for h in result.history if "val/bpd" in h]
        if vals:
            summary["val_bpd"] = vals[-1]
        write_curves(result.history, curves)
        tracking.log_metrics(run_id, summary, result.steps)
        tracking.log_params(run_id, {"flops_per_step": summary["flops_per_step"]})
        if curve is not None:
            curve_seconds = curve_setup + result.curve_seconds
            tracking.log_metrics(run_id, {"time/curves": curve_seconds}, result.steps)
            _say_curve_cost(curve_seconds, result.seconds, len(curve_at))
        # Unpaired translation normally sees no class labels; the report marks a run that did.
        labels = "yes" if model.uses_labels else "no"
        tags = {"device": str(device), "class_labels": labels, **made_by}
        if distributed.launched():
            tags["nproc"] = str(distributed.rank_and_world()[1])
        tracking.set_tags(run_id, tags)
        log_stage_time(run_id, "train")
    # Finished: nothing to resume, and a later run must not pick it up.
    for old in (wip, wip.with_suffix(".json")):
        old.unlink(missing_ok=True)
    return summary


def used_params(params: dict[str, Any], name: str, model: GenerativeModel) -> dict[str, Any]:
    """The run's params with the values the model was built with where the data changed them
    (a width rounded up to a multiple of the colour channels), and what was asked for beside
    them (`adjusted.channels: 64 -> 66 (...)`): the run records the model it trained."""
    if not model.adjusted:
        return params
    used = {key: u for key, (_, u, _) in model.adjusted.items()}
    return {
        **params,
        name: {**params[name], **used},
        **{f"model.{key}": u for key, u in used.items()},
        "adjusted": {k: f"{a} -> {u} ({why})" for k, (a, u, why) in model.adjusted.items()},
    }


def _resumed_run(wip: Path, resumes_at: int | None, identity: dict[str, Any]) -> str | None:
    """The MLflow run of the attempt that wrote checkpoint `wip`, when training will resume
    from it and the run is still in the store (and is that checkpoint's): the next attempt
    continues that run."""
    sidecar = wip.with_suffix(".json")
    if resumes_at is None or not sidecar.exists():
        return None
    remedy = f"delete {wip} and {sidecar} to train from scratch"
    run_id = checkpoints.read_json(sidecar, remedy).get("run_id")
    status = tracking.run_status(run_id) if run_id else None
    if status not in ("RUNNING", "FAILED", "KILLED"):
        return None
    fix = f"delete {sidecar} to resume it in a run of its own"
    checkpoints.check_run(identity, wip, run_id, tracking.run_tags(run_id), fix)
    return run_id


def _validation(model, split: Split, batch_size: int, device: torch.device):
    """Validation bits/dim of a likelihood model (the ELBO for bounds: cheap enough to run
    while training); None for models without a likelihood."""
    caps = model.capabilities
    if caps.likelihood is None or split.val_x is None:
        return None
    log_p = model.log_prob if caps.likelihood == "exact" else model.elbo

    def validate() -> dict[str, float]:
        return {"val/bpd": M.dataset_bpd(log_p, split.val_x, batch_size, device)}

    return validate


def _curve(p: Params, model, split: Split, device: torch.device) -> ValidationQuality | None:
    """The quality curve of this run, or None (said on stderr) when the ruler is missing: run
    by hand before `genbench classifier` (DVC runs the classifier stage first)."""
    if not CLASSIFIER.exists():
        print(
            f"no quality curve: the ruler {CLASSIFIER} is missing (`genbench classifier` makes it)",
            file=sys.stderr,
        )
        return None
    return ValidationQuality(model, split, eval_protocol(p), p.eval.curve_samples, p.seed, device)


def _say_curve_cost(seconds: float, train_seconds: float, points: int) -> None:
    """What the quality curve cost beside training, on stderr (stdout is the stage's JSON)."""
    share = seconds / train_seconds if train_seconds > 0 else 0.0
    print(
        f"quality curve: {points} points, {seconds:.1f} s ({share:.1%} of the "
        f"{train_seconds:.1f} s of training)",
        file=sys.stderr,
    )


def _profile(split: Split) -> dict[str, Any]:
    """Split sizes and image shape: what MLflow shows as the dataset's profile."""
    parts = (("train", split.train_x), ("val", split.val_x), ("test", split.test_x))
    return {**{k: len(v) for k, v in parts if v is not None}, "shape": list(split.meta.shape)}


def write_curves(history: list[dict[str, float]], folder: Path) -> None:
    """The training curves as DVC plot files (dvc.yaml declares them): one CSV per loss term,
    one for validation bits/dim and one of validation quality against compute
    (`val-quality.csv`), so `dvc plots diff` compares experiments."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    keys = dict.fromkeys(k for h in history for k in h if k.endswith("loss") or k == "val/bpd")
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h]
        write_curve(folder / f"{key.replace('/', '-')}.csv", points)
    if any("val/fid" in h for h in history):
        write_quality_curve(folder / "val-quality.csv", history)
