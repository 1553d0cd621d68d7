"""Whether a checkpoint is what the params name, fits the prepared data and belongs to the run
a stage logs into: checked before `sample`, `evaluate` and a resumed `train` do any work, so
one model's images and metrics are never logged under another's name. Each mismatch is one
`CheckpointError` line naming both sides and what to do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gen.checkpoint import CheckpointError, model_from_checkpoint
from gen.config import ConfigError, as_dict, from_dict
from gen.data import DataMeta, Split
from gen.registry import build, model_class
from pipeline.params import Params

CONFIG_TAG = "config_sha"  # on a model's run: `config_digest` of what its train stage built
SAMPLES_KEY = "checkpoint"  # in runs/samples.pt: `file_digest` of the checkpoint sampled
SHAPE = ("channels", "height", "width", "levels", "n_classes")
RETRAIN = "train it again (`genbench train`, or `dvc repro`)"


def config_digest(name: str, config: dict[str, Any]) -> str:
    """A short hash of a model's name and full config (after its params were validated)."""
    text = json.dumps({"name": name, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checked_model(
    p: Params,
    path: Path,
    ckpt: dict[str, Any],
    split: Split,
    data_hash: str | None,
    device: torch.device,
) -> Any:
    """The model of checkpoint `ckpt` (read from `path`), once checked against the params
    and the data prepared now (`data_hash`: their split hash); nothing is logged before."""
    check_params(ckpt, path, p, split.meta)
    check_data(ckpt, path, split.meta, data_hash)
    return model_from_checkpoint(ckpt, device, path)


def run_tags(ckpt: dict[str, Any]) -> dict[str, str]:
    """Tags of a run made for a checkpoint whose own run is gone: what it was trained from."""
    tags = {k: str(ckpt[k]) for k in ("code", "data") if ckpt.get(k)}
    return {**tags, CONFIG_TAG: config_digest(ckpt["name"], ckpt["config"])}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits): which checkpoint samples came from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _values(cfg: dict[str, Any], keys: list[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{k}={cfg.get(k)!r}" for k in keys)


def _shape(meta: dict[str, Any]) -> str:
    return (
        f"{meta.get('channels')}x{meta.get('height')}x{meta.get('width')} images, "
        f"{meta.get('levels')} levels, {meta.get('n_classes')} classes"
    )


def check_params(ckpt: dict[str, Any], path: Path, p: Params, meta: DataMeta) -> None:
    """The checkpoint is the model, seed and config that the params file names, as built for
    the data `meta` describes (a width the colour channels rounded up is the used value)."""
    name, src = ckpt["name"], p.path
    if name != p.model:
        raise CheckpointError(
            f"{path} holds a '{name}' checkpoint but {src} says model '{p.model}'; "
            f"{RETRAIN} or set model: {name}"
        )
    seed = ckpt.get("seed")
    if seed is not None and seed != p.seed:
        raise CheckpointError(
            f"{path} was trained with seed {seed} but {src} says seed {p.seed}; "
            f"{RETRAIN} or set seed: {seed}"
        )
    want = as_dict(built_config(p, meta))
    have = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if differ:
        shown = differ[:4]
        raise CheckpointError(
            f"{path} holds {name} with {_values(have, shown)} but {src} says "
            f"{_values(want, shown, name + '.')}; {RETRAIN} or put the checkpoint's values back"
        )


def built_config(p: Params, meta: DataMeta) -> Any:
    """The config the train stage would build the params' model with for this data: the
    params section, with what the data rounds up (`GenerativeModel.adjusted`). Built on a
    fork of the random state, so the stage's own draws are unchanged; where the data cannot
    take the model, the section as written (the other checks then name what differs)."""
    cfg = from_dict(model_class(p.model).Config, p.model, p.model_section())
    try:
        with torch.random.fork_rng(devices=[]):
            return build(p.model, p.model_section(), meta).cfg
    except ConfigError:
        return cfg


def check_data(ckpt: dict[str, Any], path: Path, meta: DataMeta, data_hash: str | None) -> None:
    """The checkpoint was trained on the data prepared now (its shape, then its bytes)."""
    have = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    now = meta.__dict__
    if any(have.get(k) != now[k] for k in SHAPE):
        raise CheckpointError(
            f"{path} was trained on {_shape(have)} but data/prepared holds {_shape(now)} "
            f"({meta.name}); {RETRAIN}"
        )
    trained_on = ckpt.get("data")
    if trained_on and data_hash and trained_on != data_hash:
        raise CheckpointError(
            f"{path} was trained on other prepared data (split {trained_on}) than data/prepared "
            f"holds now (split {data_hash}); {RETRAIN}"
        )


def check_run(
    ckpt: dict[str, Any],
    path: Path,
    run_id: str,
    tags: dict[str, str],
    fix: str = f"{RETRAIN}, which makes a run of its own",
) -> None:
    """The checkpoint (or a run identity with the same keys) is what the MLflow run `run_id`
    was made for: its model, seed, config and data tags (those the run has); `fix` says what
    to do when it is not."""
    name = ckpt["name"]
    run = f"the MLflow run {run_id} it would log to"
    if tags.get("model") != name:
        raise CheckpointError(
            f"{path} holds a '{name}' checkpoint but {run} is of model '{tags.get('model')}'; {fix}"
        )
    seed = ckpt.get("seed")
    if seed is not None and tags.get("seed") not in (None, "", str(seed)):
        raise CheckpointError(
            f"{path} was trained with seed {seed} but {run} has seed {tags['seed']}; {fix}"
        )
    digest = tags.get(CONFIG_TAG)
    if digest and isinstance(ckpt.get("config"), dict):
        if config_digest(name, ckpt["config"]) != digest:
            raise CheckpointError(
                f"{path} holds {name} with another config than {run} was trained with "
                f"({CONFIG_TAG} {digest}); {fix}"
            )
    data = tags.get("data")
    if data and ckpt.get("data") and ckpt["data"] != data:
        raise CheckpointError(
            f"{path} was trained on prepared data {ckpt['data']} but {run} on {data}; {fix}"
        )


def read_json(path: Path, remedy: str, missing_ok: bool = False) -> dict[str, Any]:
    """A JSON object a stage wrote (runs/run.json, runs/samples.json); unreadable, or missing
    unless `missing_ok`, is one line saying `remedy`."""
    path = Path(path)
    if missing_ok and not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is unreadable ({type(exc).__name__}); {remedy}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' is not a JSON object; {remedy}")
    return obj


def load_samples(path: Path, checkpoint: Path) -> dict[str, torch.Tensor]:
    """runs/samples.pt, read safely, and drawn from `checkpoint` (when it says which)."""
    if not Path(path).exists():
        raise CheckpointError(f"samples '{path}' not found; run `genbench sample` first")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"samples '{path}' are corrupt or unreadable ({type(exc).__name__}); "
            "run `genbench sample` again"
        ) from None
    if not isinstance(saved, dict) or not torch.is_tensor(saved.get("images")):
        raise CheckpointError(f"samples '{path}' hold no images; run `genbench sample` again")
    drawn_from = saved.pop(SAMPLES_KEY, None)
    if drawn_from is not None and drawn_from != file_digest(checkpoint):
        raise CheckpointError(
            f"samples '{path}' were drawn from another checkpoint ({drawn_from}) than "
            f"{checkpoint} ({file_digest(checkpoint)}); run `genbench sample` again"
        )
    return saved
