"""The protocol file in the pipeline: `genbench protocol export` writes this clone's ruler and
reference features, `genbench protocol import` brings a file into `protocols/` (pinned in
`protocols/SHA256SUMS`) and names it in params.yaml, and the classifier stage then writes the
file's rulers instead of training one, so the protocol fingerprint is the exporting host's.

A file fits a clone when it was made from the same data params and prepared split: the ruler
and the reference features depend on nothing else. Eval params, scoring code and library
versions belong to whoever scores; they stay in the fingerprint of every run, as before.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from gen import classifier as clf
from gen import protocol_file as pfile
from gen.atomic import replacing, save_tensors, staged, write_text
from gen.config import ConfigError
from gen.data import load_split
from gen.features import extract
from gen.protocol_file import ProtocolError, ProtocolFile
from gen.runtime import pick_device
from gen.user_files import read_text
from pipeline import provenance, stages, tracking
from pipeline.params import Params

PROTOCOLS = Path("protocols")  # committed protocol files; the classifier stage depends on it
SUMS = "SHA256SUMS"  # beside the files, in `sha256sum` format: `sha256sum -c SHA256SUMS`


def load(path: Path) -> ProtocolFile:
    """A protocol file, checked (pfile.read), whose rulers hash to the fingerprint it records."""
    pf = pfile.read(path)
    named = {f"{space}.pt": ckpt for space, ckpt in pf.rulers.items()}
    recorded = pf.fingerprint.get("protocol.classifier")
    if provenance.rulers_hash(named) != recorded:
        raise ProtocolError(
            f"protocol file '{path}' is corrupt: its rulers do not hash to the ruler "
            f"{recorded} its fingerprint records"
        )
    return pf


# ------------------------------------------------------------------------------- export
def export(p: Params, path: Path) -> dict[str, Any]:
    """Write this clone's protocol (prepared data, rulers, eval params) to `path`."""
    stages.use_threads(p)
    split = load_split(stages.PREPARED)
    rulers = {"classes": _ruler(stages.CLASSIFIER, split.meta.n_classes)}
    if split.domains is not None:
        k = split.meta.n_classes * len(split.domains.names)
        rulers["domains"] = _ruler(stages.DOMAIN_CLASSIFIER, k)
    protocol = stages.eval_protocol(p)
    fp = stages.fingerprint(p, protocol)
    named = {f"{space}.pt": ckpt for space, ckpt in rulers.items()}
    if provenance.rulers_hash(named) != fp["protocol.classifier"]:
        raise ProtocolError(
            f"{stages.CLASSIFIERS} holds files besides the rulers of this data; run "
            "`genbench classifier` again before exporting"
        )
    if split.val_x is None:
        raise ProtocolError(f"{stages.PREPARED} has no validation split; run `genbench prepare`")
    device = pick_device(p.train.device)
    features = {
        name: extract(
            x,
            split.meta.levels,
            protocol.extractor,
            protocol.weights("classes"),
            protocol.batch_size,
            device,
        )
        for name, x in (("train", split.train_x), ("val", split.val_x), ("test", split.test_x))
    }
    scores = stages.CLASSIFIER_METRICS
    info = {
        "data": p.raw.get("data") or {},
        "eval": p.raw.get("eval") or {},
        "classifier": {k: v for k, v in (p.raw.get("classifier") or {}).items() if k != "protocol"},
        "data_meta": split.meta.__dict__,
        "extractor": protocol.extractor,
        "space": protocol.space_name("classes"),
        "sizes": {name: len(f.features) for name, f in features.items()},
        "fingerprint": fp,
        "made": {
            "git_commit": tracking.git_commit(),
            "classifier": json.loads(scores.read_text()) if scores.exists() else None,
        },
    }
    pfile.write(ProtocolFile(rulers, features, info), path)
    return {
        "protocol_file": str(path),
        "sha256": pfile.sha256_of(path),
        "bytes": path.stat().st_size,
        "protocol": fp["protocol"],
        "classifier": fp["protocol.classifier"],
        "split": fp["protocol.split"],
    }


def _ruler(path: Path, n_classes: int) -> dict[str, Any]:
    """A ruler's checkpoint as the classifier stage wrote it, for `n_classes` classes."""
    clf.load_classifier(path)  # a missing or corrupt ruler is said here, in its words
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["n_classes"] != n_classes:
        raise ProtocolError(
            f"ruler '{path}' has {ckpt['n_classes']} classes, the prepared data {n_classes}: "
            "run `genbench classifier` again before exporting"
        )
    return ckpt


# ----------------------------------------------------------------------------- checks
def check_fits(
    pf: ProtocolFile,
    path: Path,
    data: dict[str, Any],
    eval_params: dict[str, Any],
    split: str | None,
) -> None:
    """Refuse a file made from other data params or another prepared split (`split`, when this
    clone has prepared data), naming both fingerprints and what differs."""
    theirs = pf.fingerprint
    here = provenance.fingerprint_of(
        data,
        eval_params,
        split or theirs["protocol.split"],
        theirs["protocol.classifier"],
    )
    their_data = json.loads(theirs["protocol.data"])
    our_data = json.loads(here["protocol.data"])
    diffs = [
        f"data.{k} is {json.dumps(their_data.get(k))} there, {json.dumps(our_data.get(k))} here"
        for k in sorted(set(their_data) | set(our_data))
        if their_data.get(k) != our_data.get(k)
    ]
    if split is not None and split != theirs["protocol.split"]:
        diffs.append(f"the prepared split is {theirs['protocol.split']} there, {split} here")
    if diffs:
        raise ProtocolError(
            f"protocol file '{path}' (protocol {theirs['protocol']}) does not fit this clone "
            f"(protocol {here['protocol']}): {'; '.join(diffs)}. Set classifier.protocol: null "
            "to train a ruler for this data"
        )


def read_sums(path: Path) -> dict[str, str]:
    """file name -> sha256 of a `sha256sum` file; empty when there is none."""
    if not path.exists():
        return {}
    pins = {}
    for line in read_text(path, "checksum file", "`sha256sum` lines").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, _, name = line.partition(" ")
            pins[name.strip().lstrip("*")] = digest
    return pins


def check_pinned(path: Path) -> str:
    """The sha256 of protocol file `path`, which `SHA256SUMS` beside it must pin."""
    if not path.is_file():
        raise ProtocolError(f"classifier.protocol: protocol file '{path}' not found")
    sums = path.parent / SUMS
    pinned = read_sums(sums).get(path.name)
    if pinned is None:
        raise ProtocolError(
            f"protocol file '{path}' is not pinned in {sums}: bring it in with "
            f"`genbench protocol import {path}`"
        )
    digest = pfile.sha256_of(path)
    if digest != pinned:
        raise ProtocolError(
            f"protocol file '{path}' has sha256 {digest}, but {sums} pins {pinned}: the file "
            "was changed or replaced"
        )
    return digest


# ---------------------------------------------------------------- the classifier stage
def use(p: Params) -> dict[str, Any]:
    """The classifier stage with `classifier.protocol` set: the file's rulers written as
    runs/classifiers (the same tensors, so the same ruler hash), their accuracies on this
    clone's data, and which file they came from."""
    path = Path(p.classifier.protocol or "")
    digest = check_pinned(path)
    pf = load(path)
    split = load_split(stages.PREPARED)
    here = provenance.split_hash(stages.PREPARED)
    check_fits(pf, path, p.raw.get("data") or {}, p.raw.get("eval") or {}, here)
    # The earlier rulers stay until the new ones and their figures are whole (a full disk).
    with staged(stages.CLASSIFIERS, stages.CLASSIFIER_METRICS) as (folder, metrics):
        folder.mkdir()
        for space, ckpt in pf.rulers.items():
            save_tensors(ckpt, folder / f"{space}.pt")
        net = clf.load_classifier(folder / stages.CLASSIFIER.name)
        out: dict[str, Any] = {
            "classifier_test_accuracy": clf.accuracy(net, split.test_x, split.test_y),
            "classifier_train_accuracy": clf.accuracy(net, split.train_x, split.train_y),
        }
        d, joint_path = split.domains, folder / stages.DOMAIN_CLASSIFIER.name
        if d is not None and joint_path.exists():
            joint = clf.load_classifier(joint_path)
            labels, domains = clf.predict_joint(joint, d.test_x, split.meta.n_classes)
            out["domain_classifier_domain_accuracy"] = float((domains == d.test_d).float().mean())
            out["domain_classifier_label_accuracy"] = float((labels == d.test_y).float().mean())
        out.update(protocol_file=str(path), protocol_file_sha256=digest)
        stages.write_json(metrics, out)
    return out


# ---------------------------------------------------------------------------- import
def import_file(p: Params, params_path: Path, source: Path) -> dict[str, Any]:
    """Check `source` against this clone, copy it into protocols/ with its sha256 pinned in
    protocols/SHA256SUMS, and set `classifier.protocol` to it in `params_path` (that one line:
    the file's comments stay). Nothing is written unless every check passes."""
    pf = load(source)
    prepared = (stages.PREPARED / "data.pt").exists()
    split = provenance.split_hash(stages.PREPARED) if prepared else None
    check_fits(pf, source, p.raw.get("data") or {}, p.raw.get("eval") or {}, split)
    dest = PROTOCOLS / source.name
    digest = pfile.sha256_of(source)
    pins = read_sums(PROTOCOLS / SUMS)
    in_place = dest.exists() and dest.resolve() == source.resolve()
    if in_place and pins.get(dest.name, digest) != digest:
        raise ProtocolError(
            f"protocol file '{dest}' has sha256 {digest}, but {PROTOCOLS / SUMS} pins "
            f"{pins[dest.name]}: it was changed since it was pinned"
        )
    if not in_place and dest.exists() and pfile.sha256_of(dest) != digest:
        raise ProtocolError(
            f"'{dest}' exists and is another file; rename '{source}' before importing it"
        )
    text = params_path.read_text()
    edited = set_param_line(text, "classifier", "protocol", dest.as_posix())
    if not in_place:
        with replacing(dest) as tmp:
            shutil.copyfile(source, tmp)
    pins[dest.name] = digest
    sums = "".join(f"{pins[name]}  {name}\n" for name in sorted(pins))
    write_text(PROTOCOLS / SUMS, sums)  # each whole or unchanged (a full disk)
    write_text(params_path, edited)
    return {
        "protocol_file": dest.as_posix(),
        "sha256": digest,
        "protocol": pf.fingerprint["protocol"],
        "classifier": pf.fingerprint["protocol.classifier"],
        "params": f"{params_path}: classifier.protocol: {dest.as_posix()}",
        "next": "genbench classifier (or dvc repro) writes runs/classifiers from it",
    }


def set_param_line(text: str, section: str, key: str, value: str) -> str:
    """`text` (a params file) with `section.key` set to `value` by editing its one line (or
    adding it under the section's header), so every comment stays; checked by parsing both."""
    shown = value if re.fullmatch(r"[A-Za-z0-9_./-]+", value) else json.dumps(value)
    lines = text.splitlines(keepends=True)
    header = next(
        (i for i, line in enumerate(lines) if re.match(rf"{section}:\s*(#.*)?$", line)), None
    )
    if header is None:
        lines.append(f"\n{section}:\n  {key}: {shown}\n")
    else:
        end = next(
            (i for i in range(header + 1, len(lines)) if re.match(r"[^\s#]", lines[i])),
            len(lines),
        )
        pattern = re.compile(rf"(\s+){key}:(\s*)([^#\n]*?)(\s*)(#.*)?$")
        found = next((i for i in range(header + 1, end) if pattern.match(lines[i])), None)
        if found is None:
            lines.insert(header + 1, f"  {key}: {shown}\n")
        else:
            indent, gap, old, space, comment = pattern.match(lines[found]).groups()
            new = f"{indent}{key}:{gap or ' '}{shown}"
            if comment:
                width = len(f"{indent}{key}:{gap}{old}{space}")
                new = new.ljust(width) if len(new) + 2 <= width else new + "  "
                new += comment
            lines[found] = new.rstrip() + "\n"
    edited = "".join(lines)
    want = yaml.safe_load(text) or {}
    want[section] = {**(want.get(section) or {}), key: value}
    if yaml.safe_load(edited) != want:
        raise ConfigError(
            f"cannot edit {section}.{key} in the params file by its line; set "
            f"`{section}: {{{key}: {shown}}}` there yourself"
        )
    return edited
