"""Outputs written whole or not at all: a full disk, a signal or an error while writing leaves
the previous file (or folder) as it was, never a truncated one beside it.

`staged(a, b, ...)` gives temporary paths for several outputs of one stage (each with its
final name, so an artifact logged from there is named as the output) and moves them all into
place only when the block ends without an error; `replacing(path)` does the same for one file,
which `save_tensors` and `write_text` write through.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def _move_into_place(new: Path, dest: Path) -> None:
    """Rename `new` onto `dest`: one rename for a file; a folder in its place is moved aside
    first and removed once the new one is in."""
    if dest.is_symlink() and new.is_dir():  # a link to DVC's cache: a folder cannot replace it
        dest.unlink()
    if not (dest.is_dir() and not dest.is_symlink()):
        os.replace(new, dest)
        return
    aside = dest.with_name(f".{dest.name}.old")
    _remove(aside)
    os.replace(dest, aside)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(aside, dest)
        raise
    _remove(aside)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write one file into; it replaces `path` when the block
    ends, and is removed instead if the block raises (a full disk leaves no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    _remove(tmp)
    try:
        yield tmp
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def staged(*dests: Path) -> Iterator[list[Path]]:
    """Temporary paths for `dests` (files or folders, with the same names, in a hidden folder
    beside the first): what the block writes there is moved into place, each in one rename,
    once it ends without an error; on an error all of it is removed and `dests` are as they
    were. A destination the block did not write is left alone."""
    dests = [Path(d) for d in dests]
    if len({d.name for d in dests}) != len(dests):
        raise ValueError(f"staged outputs need distinct names: {[str(d) for d in dests]}")
    root = dests[0].parent / f".{dests[0].name}.staged"
    _remove(root)  # what a killed attempt left
    root.mkdir(parents=True)
    paths = [root / d.name for d in dests]
    try:
        yield paths
        for new, dest in zip(paths, dests, strict=True):
            if new.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _move_into_place(new, dest)
    finally:
        _remove(root)


def save_tensors(obj: Any, path: Path) -> None:
    """`torch.save` whole or not at all. Torch's own file writer reports a refused write (a
    full disk) as an unexplained RuntimeError; then the write is tried once more through a
    Python file, which names the cause (an OSError such as ENOSPC, with `path`)."""
    with replacing(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:
            try:
                with open(tmp, "wb") as f:
                    torch.save(obj, f)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(path)) from None


def write_text(path: Path, text: str) -> None:
    """A text file written whole or not at all; a refused write is an OSError naming `path`."""
    with replacing(path) as tmp:
        try:
            tmp.write_text(text)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
