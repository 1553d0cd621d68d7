"""The files a user hands genbench (params, presets, captions and attribute files, MNIST's IDX
files), read in one place: bytes that cannot be what the file should be (not UTF-8, a wrong
magic number, empty, truncated, a folder where a file belongs, a path where a name belongs)
become one line naming the file and what was expected, never a traceback from deep inside a
decoder."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


class UserFileError(ValueError):
    """A user's file that cannot be read as what it should be; the message names the file."""


def _fail(what: str, path: str | Path, problem: str, expected: str) -> UserFileError:
    return UserFileError(f"{what} '{path}' {problem}; expected {expected}")


def read_bytes(path: str | Path, what: str, expected: str, limit: int = -1) -> bytes:
    """The bytes of `path` (its first `limit` when given). `what` names the file ("params
    file") and `expected` says what it should hold ("a YAML mapping of sections"), for the one
    line an unreadable file gives."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except FileNotFoundError:
        raise _fail(what, path, "not found", expected) from None
    except IsADirectoryError:
        raise _fail(what, path, "is a folder", expected) from None
    except OSError as exc:
        raise _fail(what, path, f"cannot be read ({exc.strerror or exc})", expected) from None


def read_text(path: str | Path, what: str, expected: str) -> str:
    """The text of `path`, decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_bytes(path, what, expected)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})"
        raise _fail(what, path, problem, expected) from None


def read_yaml(path: str | Path, what: str, expected: str) -> Any:
    """`path` parsed as YAML (None when it holds nothing); a syntax error names its place."""
    import yaml

    text = read_text(path, what, expected)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(what, path, f"is not valid YAML{where}: {problem}", expected) from None
    except ValueError as exc:  # a value YAML parses but Python refuses (an int of 5000 digits)
        problem = f"holds a value that cannot be read ({' '.join(str(exc).split())[:80]})"
        raise _fail(what, path, problem, expected) from None
    except RecursionError:
        raise _fail(what, path, "nests too deeply to be read", expected) from None


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(value: str, what: str, known: list[str]) -> str:
    """`value` as a name (of a preset, say), not a path or a file name: one line otherwise."""
    if NAME.fullmatch(value) and not value.endswith((".yaml", ".yml")):
        return value
    hint = f"'{Path(value).stem}'" if Path(value).stem in known else "one of: " + ", ".join(known)
    raise UserFileError(f"{what} {value!r} is a path or a file name; give a name: {hint}")


# ------------------------------------------------------------------------------ IDX files
# MNIST's format (http://yann.lecun.com/exdb/mnist/): 2 zero bytes, a type byte (0x08: uint8),
# the number of dimensions, then each dimension as a big-endian int32, then the values.
IDX_UBYTE = 0x08
MNIST_FILES = (  # (images, labels) of the training and the test split, as torchvision names them
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


def idx_header(path: Path, dims: int) -> list[int]:
    """The sizes IDX file `path` declares (uint8 with `dims` dimensions), checked against its
    magic number and its length: an empty, truncated or foreign file is one line."""
    magic = (IDX_UBYTE << 8) | dims
    expected = f"an MNIST IDX file (magic number 0x{magic:08x}: uint8, {dims} dimension(s))"
    head = read_bytes(path, "data file", expected, limit=4 + 4 * dims)
    if not head:
        raise _fail("data file", path, "is empty", expected)
    if len(head) < 4 + 4 * dims:
        raise _fail("data file", path, f"is {len(head)} bytes, shorter than its header", expected)
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise _fail("data file", path, f"has magic number 0x{found:08x}", expected)
    sizes = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    length, declared = path.stat().st_size, len(head) + math.prod(sizes)
    if length != declared:
        problem = (
            f"is {length} bytes but its header declares {declared} "
            f"({'x'.join(map(str, sizes))} values): truncated or not this format"
        )
        raise _fail("data file", path, problem, expected)
    return sizes


def check_mnist(raw: Path, size: tuple[int, int] = (28, 28), classes: int = 10) -> None:
    """MNIST-format files under `raw` (MNIST, Fashion-MNIST), where present, checked before a
    reader trusts them: images of `size`, as many labels as images, labels in 0..classes-1."""
    for images, labels in MNIST_FILES:
        image_path, label_path = raw / images, raw / labels
        if not (image_path.exists() or label_path.exists()):
            continue  # not given: the data set's reader says where to put them
        n, *shape = idx_header(image_path, 3)
        if tuple(shape) != size:
            got, want = "x".join(map(str, shape)), "x".join(map(str, size))
            raise _fail("data file", image_path, f"holds {got} images", f"{want} images")
        (m,) = idx_header(label_path, 1)
        if m != n:
            raise _fail("data file", label_path, f"holds {m} labels", f"{n}, one per image")
        found = max(read_bytes(label_path, "data file", "labels")[8:], default=0)
        if found >= classes:
            raise _fail("data file", label_path, f"holds label {found}", f"0..{classes - 1}")
