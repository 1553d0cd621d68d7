"""Checkpoints: written atomically, read safely, rebuilt into a model from the file alone, and
matched against a run to decide whether training resumes from them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gen.config import as_dict
from gen.data import DataMeta

if TYPE_CHECKING:  # a type only: the models import nothing of checkpoints
    from gen.models.base import GenerativeModel


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not describe a known model."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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
    missing = (
        {"name", "config", "meta", "state_dict"} - set(ckpt) if isinstance(ckpt, dict) else {"all"}
    )
    if missing:
        raise CheckpointError(f"checkpoint '{path}' lacks {', '.join(sorted(missing))}")
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], device: torch.device | str = "cpu"
) -> GenerativeModel:
    """Rebuild a model from the checkpoint alone: its name, config and data metadata."""
    from gen.registry import build

    meta = DataMeta(**ckpt["meta"])
    model = build(ckpt["name"], ckpt["config"], meta)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


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


def resume_step(checkpoint: Path | None, identity: dict[str, Any]) -> int | None:
    """The step training would resume from with `checkpoint`; None when it starts afresh."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    ckpt = load_checkpoint(checkpoint)
    return int(ckpt.get("step", 0)) if same_run(ckpt, identity) else None
