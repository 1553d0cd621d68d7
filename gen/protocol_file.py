"""The protocol as one file: the ruler and the reference features, so that another machine
measures with exactly these bytes instead of training its own ruler.

The ruler's float sums differ between CPU makers (Intel and AMD trained different rulers from
one seed under the same held instructions), so two hosts never shared a protocol fingerprint
unless one carries the other's ruler. The file holds what scoring needs:

- `rulers`: the classifier checkpoints as `gen.classifier.classifier_checkpoint` writes them,
  "classes" and, when the data has domains, "domains" (the (domain, class) pairs);
- `features`: the train, val and test splits in the classes' feature space (float64 features
  and logits, `gen.features.Features`): train whitens and gives the copy rate, test is the
  reference of FID / KID / precision / recall / density / coverage, val is held out;
- `info`: the `data`, `eval` and `classifier` params, the data's shape and levels, the feature
  space, the protocol fingerprint it was made under and where it was made;
- `content_hash`: sha256 over every tensor and every plain value above.

The domain space's features are not stored (several MB more): translations are scored with the
domain ruler on the data set itself, so scoring outside samples covers the classes space only.
It is read with `torch.load(weights_only=True)`: a file holding other objects is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gen.atomic import save_tensors
from gen.data import DataMeta
from gen.features import Features

FORMAT = "genbench-protocol"
VERSION = 1
SPLITS = ("train", "val", "test")
RULER_KEYS = ("channels", "levels", "n_classes", "features", "state_dict")
INFO_KEYS = ("data", "eval", "classifier", "data_meta", "extractor", "fingerprint")


class ProtocolError(RuntimeError):
    """A protocol file that cannot be used: corrupt, of another format, or for other data."""


@dataclass
class ProtocolFile:
    rulers: dict[str, dict[str, Any]]  # "classes" (and "domains") -> classifier checkpoint
    features: dict[str, Features]  # "train", "val", "test" in the classes' feature space
    info: dict[str, Any]  # params, data meta, feature space, fingerprint (plain JSON values)

    @property
    def fingerprint(self) -> dict[str, str]:
        """The protocol fingerprint (`protocol` and its `protocol.*` parts) it was made under."""
        return self.info["fingerprint"]

    @property
    def meta(self) -> DataMeta:
        return DataMeta(**self.info["data_meta"])


def _payload(pf: ProtocolFile) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "rulers": pf.rulers,
        "features": {
            k: {"features": f.features, "logits": f.logits} for k, f in pf.features.items()
        },
        "info": json.dumps(pf.info, sort_keys=True),
    }


def _leaves(tree: Any, prefix: str, tensors: dict, plain: dict) -> None:
    """Every tensor and every plain value of a nested dict, under its '/'-joined path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            _leaves(value, f"{prefix}/{key}", tensors, plain)
    elif torch.is_tensor(tree):
        tensors[prefix] = tree
    else:
        plain[prefix] = tree


def content_hash(payload: dict[str, Any]) -> str:
    """sha256 of every tensor (path, dtype, shape, bytes) and the plain values as JSON. Kept
    here rather than borrowed from pipeline.provenance: gen/ imports nothing of the pipeline."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    _leaves({k: v for k, v in payload.items() if k != "content_hash"}, "", tensors, plain)
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    h.update(json.dumps(plain, sort_keys=True, default=str).encode())
    return h.hexdigest()


def write(pf: ProtocolFile, path: Path) -> None:
    """Write atomically (a temporary file, then a rename); a full disk is an OSError naming it."""
    payload = _payload(pf)
    payload["content_hash"] = content_hash(payload)
    save_tensors(payload, Path(path))


def read(path: Path) -> ProtocolFile:
    """The file at `path`, checked: its format and version, every part there, the content hash."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"protocol file '{path}' not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ProtocolError(
            f"protocol file '{path}' is corrupt or not a genbench protocol file "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ProtocolError(f"'{path}' is not a genbench protocol file (no '{FORMAT}' tag)")
    if payload.get("version") != VERSION:
        raise ProtocolError(
            f"protocol file '{path}' has format version {payload.get('version')!r}; this "
            f"genbench reads version {VERSION}"
        )
    _require_parts(payload, path)
    if payload.get("content_hash") != content_hash(payload):
        raise ProtocolError(
            f"protocol file '{path}' is corrupt: its content hash does not match its contents "
            "(edited or damaged since it was written)"
        )
    features = {k: Features(v["features"], v["logits"]) for k, v in payload["features"].items()}
    return ProtocolFile(payload["rulers"], features, json.loads(payload["info"]))


def _require_parts(payload: dict[str, Any], path: Path) -> None:
    """Every part scoring reads, with the right kind of value: a missing one is named."""

    def missing(what: str) -> ProtocolError:
        return ProtocolError(f"protocol file '{path}' is corrupt: it lacks {what}")

    rulers, features = payload.get("rulers"), payload.get("features")
    if not isinstance(rulers, dict) or not isinstance(rulers.get("classes"), dict):
        raise missing("the classes ruler ('rulers/classes')")
    for name, ruler in rulers.items():
        for key in RULER_KEYS:
            if key not in ruler:
                raise missing(f"'rulers/{name}/{key}'")
    for split in SPLITS:
        part = features.get(split) if isinstance(features, dict) else None
        for key in ("features", "logits"):
            if not isinstance(part, dict) or not torch.is_tensor(part.get(key)):
                raise missing(f"'features/{split}/{key}'")
        if part["features"].dtype != torch.float64 or len(part["features"]) != len(part["logits"]):
            raise ProtocolError(f"protocol file '{path}' is corrupt: bad 'features/{split}'")
    try:
        info = json.loads(payload.get("info", ""))
    except (TypeError, ValueError):
        raise missing("its 'info' (JSON)") from None
    for key in INFO_KEYS:
        if key not in info:
            raise missing(f"'info/{key}'")


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes: what protocols/SHA256SUMS pins."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
