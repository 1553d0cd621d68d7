"""Hashes that say what made a result: the training code, the prepared data, the ruler.

A checkpoint resumes only under the same code and data hashes, and every run is tagged with
the protocol fingerprint (data config and split, evaluation classifier, eval params, library
versions): the report puts only runs with one fingerprint in one table.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from gen import registry

GEN = Path(__file__).resolve().parents[1] / "gen"
# The code that scores samples: an edited metric is another protocol, like another eval param.
# (quality_curve.py: the validation curve's samples and figures while training; dinov2.py: the
# DINOv2 network)
SCORING = [
    GEN / name
    for name in (
        "evaluation.py",
        "features.py",
        "metrics.py",
        "classifier.py",
        "quality_curve.py",
        "dinov2.py",
    )
]
# eval params that change how samples are scored: not batch_size (only the speed), nor where a
# weights file lies on this machine (the file's own hash, protocol.feature_weights, stands in),
# nor curve_points (which steps get a validation point, not what a point measures)
EVAL_KEYS_IGNORED = ("batch_size", "feature_weights", "inception_weights", "curve_points")


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def code_hash_of(files: list[Path], root: Path = GEN) -> str:
    parts: list[bytes] = []
    for f in sorted(files):
        parts += [f.relative_to(root).as_posix().encode(), f.read_bytes()]
    return _digest(parts)[:16]


def code_hash(root: Path = GEN) -> str:
    """sha256 of the model library's sources (gen/**/*.py): an edited loss is another model."""
    return code_hash_of(list(root.rglob("*.py")), root)


def model_code(name: str) -> dict[str, str]:
    """A plug-in model's package and version and a hash of its sources, which `code_hash`
    (gen/ only) misses: tags on its runs, and part of what a checkpoint must share to be
    resumed. Empty for a built-in model."""
    plugin = registry.plugin(name)
    if plugin is None:
        return {}
    root, files = plugin.source_files()
    return {
        "plugin": f"{plugin.package}=={plugin.version}",
        "plugin_code": code_hash_of(files, root),
    }


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of tensors' names, dtypes, shapes and bytes (not of a pickle's framing)."""
    parts: list[bytes] = []
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        parts += [key.encode(), f"{t.dtype}{tuple(t.shape)}".encode(), t.numpy().tobytes()]
    return _digest(parts)


def split_hash(prepared: Path) -> str:
    """The prepared data's identity: every tensor of data/prepared and its metadata."""
    parts = []
    for name in ("data.pt", "domains.pt"):
        path = prepared / name
        if path.exists():
            tensors = torch.load(path, weights_only=True)
            parts.append(tensors_hash({k: v for k, v in tensors.items() if torch.is_tensor(v)}))
    meta = prepared / "meta.json"
    if meta.exists():
        parts.append(hashlib.sha256(meta.read_bytes()).hexdigest())
    return _digest([p.encode() for p in parts])[:16]


def classifier_hash(folder: Path) -> str:
    """sha256 of the evaluation classifiers' weights (the ruler every sample is measured with)."""
    rulers = {
        path.name: torch.load(path, map_location="cpu", weights_only=True)
        for path in sorted(folder.glob("*.pt"))
    }
    return rulers_hash(rulers)


def rulers_hash(rulers: dict[str, dict[str, Any]]) -> str:
    """`classifier_hash` of checkpoints in memory (file name -> checkpoint), such as the rulers
    of a protocol file before they are written."""
    parts = []
    for name in sorted(rulers):
        parts += [name.encode(), tensors_hash(rulers[name]["state_dict"]).encode()]
    return _digest(parts)[:16]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (a feature extractor's weights: 88 MB to 4.5 GB), read in 1 MB
    pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def fingerprint(
    data: dict[str, Any],
    eval_params: dict[str, Any],
    prepared: Path,
    classifiers: Path,
    feature_weights: Path | None = None,
) -> dict[str, str]:
    """The protocol's parts and their joint fingerprint, as MLflow tags (`protocol.*`).
    `feature_weights`: the weights file of a torch-fidelity feature extractor (eval params
    name the extractor; this hash says which weights it had)."""
    weights = file_hash(feature_weights) if feature_weights else "none"
    return fingerprint_of(
        data, eval_params, split_hash(prepared), classifier_hash(classifiers), weights
    )


def fingerprint_of(
    data: dict[str, Any],
    eval_params: dict[str, Any],
    split: str,
    classifier: str,
    feature_weights: str = "none",
) -> dict[str, str]:
    """`fingerprint` from the split, ruler and weights hashes themselves (a protocol file's),
    with this installation's scoring code and library versions."""
    scoring = {k: v for k, v in sorted((eval_params or {}).items()) if k not in EVAL_KEYS_IGNORED}
    parts = {
        "protocol.data": json.dumps(data or {}, sort_keys=True, default=str),
        "protocol.split": split,
        "protocol.classifier": classifier,
        "protocol.feature_weights": feature_weights,
        "protocol.eval": json.dumps(scoring, sort_keys=True, default=str),
        "protocol.scoring_code": code_hash_of(SCORING),
        "protocol.torch": torch.__version__.split("+")[0],
        "protocol.torch_fidelity": _version("torch-fidelity"),
    }
    joint = _digest([f"{k}={v}".encode() for k, v in sorted(parts.items())])[:12]
    return {"protocol": joint, **parts}
