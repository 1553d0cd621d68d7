"""Checkpoints: written atomically, read safely, rebuilt into a model from the file alone, and
matched against a run to decide whether training resumes from them."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen.atomic import save_tensors
from gen.config import as_dict
from gen.data import DataMeta

if TYPE_CHECKING:  # a type only: the models import nothing of checkpoints
    from gen.models.base import GenerativeModel


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not describe a known model."""


FIELDS = {"name": str, "config": dict, "meta": dict, "state_dict": dict}  # what every one holds


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a kill or a full disk mid-write leaves the previous checkpoint intact
    and no partial file beside it."""
    save_tensors(payload, Path(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' not found; run `genbench train` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # a pickled object torch's safe loader would not build
            raise CheckpointError(
                f"checkpoint '{path}' was refused: it holds Python objects beyond tensors and "
                "plain values, and loading them could run code; use checkpoints genbench wrote"
            ) from None
        raise CheckpointError(f"checkpoint '{path}' is corrupt (UnpicklingError)") from None
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or unreadable ({type(exc).__name__})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"checkpoint '{path}' lacks {', '.join(sorted(FIELDS))}: it holds a "
            f"{type(ckpt).__name__}, not a genbench checkpoint"
        )
    missing = sorted(k for k in FIELDS if k not in ckpt)
    if missing:
        raise CheckpointError(f"checkpoint '{path}' lacks {', '.join(missing)}")
    wrong = [k for k, kind in FIELDS.items() if not isinstance(ckpt[k], kind)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"checkpoint '{path}' is not a genbench checkpoint: its {k} is a "
            f"{type(ckpt[k]).__name__}, not a {FIELDS[k].__name__}"
        )
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], device: torch.device | str = "cpu", path: Path | str = "checkpoint"
) -> GenerativeModel:
    """Rebuild a model from the checkpoint alone: its name, config and data metadata. A
    checkpoint whose config does not build, or whose weights do not fit the model its config
    builds, is one CheckpointError naming `path`."""
    from gen.registry import build

    name = ckpt["name"]
    try:
        meta = DataMeta(**ckpt["meta"])
        model = build(name, ckpt["config"], meta)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint '{path}' does not describe a model that builds ({first_line(exc)})"
        ) from None
    check_weights(model, ckpt["state_dict"], path)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def check_weights(
    model: GenerativeModel,
    state_dict: dict[str, Any],
    path: Path | str,
    remedy: str = "train it again",
) -> None:
    """Raise a CheckpointError when `state_dict` does not fit `model` (keys missing or left
    over, shapes that differ): before any weight is copied or anything is logged."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    problems = [f"missing {', '.join(missing[:3])}"] if missing else []
    if extra:
        problems.append(f"unexpected {', '.join(extra[:3])}")
    for k, v in own.items():
        have = getattr(state_dict.get(k), "shape", None)
        if k in state_dict and torch.is_tensor(v) and have != v.shape:
            problems.append(f"{k} is {tuple(have or ())}, the model's {tuple(v.shape)}")
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}': its weights do not fit the {model.name} its config builds "
            f"({problems[0]}); {remedy}"
        )


def first_line(exc: BaseException) -> str:
    """The gist of an error in one short line (torch's own list every key, line by line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def same_run(ckpt: dict[str, Any], identity: dict[str, Any]) -> bool:
    """A checkpoint continues this run if everything but `steps` matches (model, config, data,
    seed and the code that trains it) and it has not gone past `steps`: raising `steps` trains
    on, lowering it below the checkpoint's step starts again rather than hand back a model
    trained for longer than asked."""

    def strip(cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cfg.items() if k != "steps"}

    same = all(ckpt.get(k) == v for k, v in identity.items() if k != "config")
    steps = identity["config"].get("steps", 0)
    return (
        same
        and strip(ckpt.get("config", {})) == strip(identity["config"])
        and int(ckpt.get("step", 0)) <= steps
    )


def run_identity(
    model: GenerativeModel, seed: int, provenance: dict[str, str] | None = None
) -> dict[str, Any]:
    """What a checkpoint must share with a run to be resumed by it (see `same_run`)."""
    return {
        "name": model.name,
        "config": as_dict(model.cfg),
        "meta": model.meta.__dict__,
        "seed": seed,
        **(provenance or {}),
    }


def resume_step(
    checkpoint: Path | None, identity: dict[str, Any], model: GenerativeModel | None = None
) -> int | None:
    """The step training would resume from with `checkpoint`; None when it starts afresh.
    With `model`, a checkpoint of this run whose weights do not fit it is a CheckpointError."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    remedy = "delete it to train from scratch"
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {remedy}") from None
    if not same_run(ckpt, identity):
        return None
    if model is not None:
        check_weights(model, ckpt["state_dict"], checkpoint, remedy)
    return int(ckpt.get("step", 0))
