"""Bad bytes and slow or noisy failures, as a new user and an operator meet them: files that
are not what they should be (not UTF-8, a wrong magic number, empty, truncated, a path where a
name belongs), integers beyond what torch and NumPy take, a dead database, a read-only store.
Each is one `Error:` line naming the file or key and what is allowed, exit status 2, no
traceback, and nothing changed: params.yaml, the MLflow store, earlier results, no run left
RUNNING."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml
from click.testing import CliRunner
from conftest import ROOT, copy_project, query

from gen.user_files import UserFileError
from pipeline import store_check
from pipeline.cli import main
from pipeline.presets import load_preset


@pytest.fixture(scope="module")
def repo(prepared_template, tmp_path_factory) -> Path:
    """The tiny project with its data, rulers and data row: the earlier results every probe
    must leave alone (its MLflow store holds the data row's finished run)."""
    return copy_project(prepared_template, tmp_path_factory.mktemp("bad-inputs") / "repo")


@pytest.fixture
def here(repo: Path, monkeypatch) -> Path:
    """`repo` as the working directory and store of an in-process command, as a new process
    would find it (no store checked yet)."""
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(store_check, "_checked", set())
    return repo


def state(repo: Path) -> dict[str, str]:
    """A digest of everything a probe must not change: params.yaml, the store, the results."""
    out = {}
    for name in ("params.yaml", "mlflow.db", "data/prepared", "runs", "mlartifacts"):
        path = repo / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def one_error_line(code: int, output: str) -> str:
    """The command's one line, checked: exit status 2, one `Error:` line, no traceback."""
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


def probe(repo: Path, args: list[str], **env: str) -> str:
    """Run `genbench ARGS` in this process (with `env` set), check that it fails in one line
    and changes nothing, and return the line."""
    before = state(repo)
    result = CliRunner().invoke(main, args, env=env or None)
    raised = result.exception and not isinstance(result.exception, SystemExit)
    line = one_error_line(result.exit_code, result.output + ("Traceback" if raised else ""))
    assert state(repo) == before, line
    assert not query(repo, "select run_uuid from runs where status = 'RUNNING'")
    return line


@contextlib.contextmanager
def written(path: Path, data: bytes | None) -> Iterator[Path]:
    """`path` holding `data` (a folder when None) for the block, then as it was."""
    keep = path.read_bytes() if path.is_file() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    try:
        yield path
    finally:
        if path.is_dir():
            path.rmdir()
        elif keep is None:
            path.unlink()
        else:
            path.write_bytes(keep)


def params_with(repo: Path, **sections) -> bytes:
    """The repository's params.yaml with `sections` changed, as bytes to write elsewhere."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in sections.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    return yaml.safe_dump(params, sort_keys=False).encode()


# ------------------------------------------------------------- class 5: decoding and formats
LATIN1 = "# réglages\n".encode("latin-1")

PARAMS_FILES: dict[str, tuple[Callable[[Path], bytes | None], str]] = {
    # id: (the bytes of the params file given with --params (None: a folder), what is said)
    "latin-1 comment": (lambda r: LATIN1 + (r / "params.yaml").read_bytes(), "not UTF-8 text"),
    "utf-16": (
        lambda r: (r / "params.yaml").read_text().encode("utf-16"),
        "not UTF-8 text (byte 0xff on line 1)",
    ),
    "a checkpoint given": (
        lambda r: (r / "runs/classifiers/classes.pt").read_bytes(),
        "expected a YAML mapping",
    ),
    "empty": (lambda r: b"", "is empty; expected a YAML mapping of sections"),
    "only a comment": (lambda r: b"# nothing yet\n", "is empty"),
    "a folder": (lambda r: None, "is a folder"),
    "an int of 5000 digits": (lambda r: b"model: vae\nseed: " + b"9" * 5000, "cannot be read"),
    "nested too deeply": (lambda r: b"model: vae\nvae: " + b"[" * 5000 + b"]" * 5000, "deeply"),
}


@pytest.mark.parametrize("case", PARAMS_FILES)
def test_a_params_file_that_is_not_yaml_text_is_one_line_naming_it(here: Path, case: str):
    make, says = PARAMS_FILES[case]
    with written(here / "bad" / "params.yaml", make(here)):
        line = probe(here, ["train", "--params", "bad/params.yaml"])
    assert "params file 'bad/params.yaml'" in line and says in line, line


@pytest.mark.parametrize("command", [["train"], ["benchmark"], ["report"]])
def test_a_params_yaml_with_latin1_bytes_is_one_line_and_left_as_it_is(here: Path, command):
    with written(here / "params.yaml", LATIN1 + (here / "params.yaml").read_bytes()):
        line = probe(here, command)
    assert line == (
        "Error: params file 'params.yaml' is not UTF-8 text (byte 0xe9 on line 1); expected "
        "a YAML mapping of sections (model:, seed:, data:, ...)"
    )


TOO_BIG = 2**70
INTEGERS = {
    # id: (params changes, command line, what the line says)
    "seed 2**70": ({"seed": TOO_BIG}, ["train"], f"'seed'={TOO_BIG} must be in 0..4294967295"),
    "seed negative": ({"seed": -1}, ["sample"], "'seed'=-1 must be in 0..4294967295"),
    "seed 2**32": ({"seed": 2**32}, ["evaluate"], "must be in 0..4294967295"),
    "seed a float 1e20": ({"seed": 1e20}, ["train"], "must be in 0..4294967295"),
    "data.seed 2**64": ({"data": {"seed": 2**64}}, ["prepare"], f"data.seed={2**64} must be in"),
    "data.seed negative": ({"data": {"seed": -5}}, ["prepare"], "data.seed=-5 must be in 0.."),
    "classifier.seed": ({"classifier": {"seed": TOO_BIG}}, ["classifier"], "classifier.seed="),
    "benchmark.seeds": (
        {"benchmark": {"seeds": [0, TOO_BIG]}},
        ["benchmark"],
        f"benchmark.seeds=[0, {TOO_BIG}] must be distinct integers in 0..4294967295",
    ),
    "--seeds 2**70": ({}, ["benchmark", "--seeds", f"0,{TOO_BIG}"], "in 0..4294967295"),
    "steps 2**70": (
        {"pixelcnn": {"steps": TOO_BIG}},
        ["train"],
        f"pixelcnn.steps={TOO_BIG} is out of range: integers must be in -2**63..2**63-1",
    ),
    "eval.batch_size 2**63": ({"eval": {"batch_size": 2**63}}, ["evaluate"], "-2**63..2**63-1"),
    "lr 10**400": ({"model": "vae", "vae": {"lr": 10**400}}, ["train"], "too large for a number"),
}


@pytest.mark.parametrize("case", INTEGERS)
def test_an_integer_beyond_torch_or_numpy_is_one_line_naming_the_key_and_range(
    here: Path, case: str
):
    changes, args, says = INTEGERS[case]
    with written(here / "bad.yaml", params_with(here, **changes)):
        line = probe(here, [*args, "--params", "bad.yaml"])
    assert says in line, line


def idx(shape: tuple[int, ...], magic: int | None = None, last: int | None = None) -> bytes:
    """An MNIST IDX file of uint8 values: `magic` (default: the right one), the sizes, the
    values (labels 0..9, pixels 0..255; the last one `last` when given)."""
    magic = (0x0800 | len(shape)) if magic is None else magic
    values = np.arange(int(np.prod(shape))) % (10 if len(shape) == 1 else 256)
    if last is not None:
        values[-1] = last
    return struct.pack(f">I{len(shape)}I", magic, *shape) + values.astype(np.uint8).tobytes()


MNIST = {
    # id: (the four files, in MNIST_FILES' order, as bytes; what the line says)
    "wrong magic": (
        [idx((6, 28, 28), magic=0x0801), idx((6,)), idx((4, 28, 28)), idx((4,))],
        "train-images-idx3-ubyte' has magic number 0x00000801; expected an MNIST IDX file",
    ),
    "zero bytes": (
        [idx((6, 28, 28)), idx((6,)), b"", idx((4,))],
        "t10k-images-idx3-ubyte' is empty; expected an MNIST IDX file",
    ),
    "truncated": (
        [idx((6, 28, 28))[:-100], idx((6,)), idx((4, 28, 28)), idx((4,))],
        "truncated",
    ),
    "shorter than a header": (
        [idx((6, 28, 28)), b"\0\0\x08", idx((4, 28, 28)), idx((4,))],
        "is 3 bytes, shorter than its header",
    ),
    "gzip not unpacked": (
        [b"\x1f\x8b\x08\x00" + bytes(60), idx((6,)), idx((4, 28, 28)), idx((4,))],
        "magic number 0x1f8b0800",
    ),
    "32x32 images": ([idx((6, 32, 32)), idx((6,)), idx((4, 28, 28)), idx((4,))], "32x32 images"),
    "fewer labels": ([idx((6, 28, 28)), idx((5,)), idx((4, 28, 28)), idx((4,))], "5 labels"),
    "label 12": (
        [idx((6, 28, 28)), idx((6,), last=12), idx((4, 28, 28)), idx((4,))],
        "holds label 12; expected 0..9",
    ),
}
MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.mark.parametrize("case", MNIST)
def test_mnist_files_that_are_not_idx_files_of_28x28_images_are_one_line(here: Path, case: str):
    files, says = MNIST[case]
    raw = here / "mnist-raw" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in zip(MNIST_NAMES, files, strict=True):
        (raw / name).write_bytes(data)
    mnist = params_with(here, data={"name": "mnist", "root": "mnist-raw", "domains": "none"})
    with written(here / "bad.yaml", mnist):
        line = probe(here, ["prepare", "--params", "bad.yaml"])
    assert "data file 'mnist-raw/MNIST/raw/" in line and says in line, line


def image_folder(repo: Path, captions: str = "none") -> bytes:
    """Four gray PNGs under `repo/images`; the params that read them, with `captions`."""
    from PIL import Image

    root = repo / "images"
    root.mkdir(exist_ok=True)
    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(root / f"{i}.png")
    data = {"name": "image_folder", "root": "images", "image_size": 8, "channels": 1}
    return params_with(repo, data={**data, "captions": captions, "domains": "none"})


CAPTIONS = {
    "latin-1": ('{"file": "0.png", "caption": "un caf\xe9"}\n'.encode("latin-1"), "not UTF-8"),
    "binary": (bytes(range(256)), "not UTF-8 text (byte 0x80 on line 2)"),
    "a folder": (None, "is a folder"),
}


@pytest.mark.parametrize("case", CAPTIONS)
def test_a_captions_file_that_is_not_utf8_json_lines_is_one_line_naming_it(here: Path, case: str):
    data, says = CAPTIONS[case]
    with written(here / "bad.yaml", image_folder(here, "captions.jsonl")):
        with written(here / "captions.jsonl", data):
            line = probe(here, ["prepare", "--params", "bad.yaml"])
    assert "captions file 'captions.jsonl'" in line and says in line, line


def test_an_attribute_file_that_is_not_utf8_is_one_line_naming_it(here: Path):
    domains = {"domains": "attribute_csv", "domains_root": "attributes"}
    with written(here / "bad.yaml", params_with(here, data=domains)):
        with written(here / "attributes" / "attributes.csv", b"file,a,b\n\xff\xfe,1,0\n"):
            line = probe(here, ["prepare", "--params", "bad.yaml"])
    assert "attribute file 'attributes/attributes.csv' is not UTF-8 text" in line, line
    (here / "attributes").rmdir()


@pytest.mark.parametrize(
    "image", [b"not an image", b"", b"\x89PNG\r\n\x1a\n" + bytes(30)], ids=["text", "empty", "cut"]
)
def test_an_image_that_is_not_one_is_one_line_naming_it(here: Path, image: bytes):
    with written(here / "bad.yaml", image_folder(here)):
        with written(here / "images" / "9.png", image):
            line = probe(here, ["prepare", "--params", "bad.yaml"])
    assert "cannot read image 'images/9.png'" in line, line


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../params", "preset '../params' is a path or a file name"),
        ("presets/pixelcnn-cifar10.yaml", "give a name: 'pixelcnn-cifar10'"),
        ("pixelcnn-cifar10.yaml", "give a name: 'pixelcnn-cifar10'"),
        (str(ROOT / "presets" / "pixelcnn-cifar10"), "give a name: 'pixelcnn-cifar10'"),
        (str(ROOT / "params.yaml"), "give a name: one of: gated-pixelcnn-cifar10"),
    ],
)
def test_a_path_where_a_preset_name_belongs_is_one_line(here: Path, name: str, says: str):
    assert says in probe(here, ["preset", name])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"description: x\npublished: \xe9\n", "is not UTF-8 text (byte 0xe9 on line 2)"),
        (b"", "is not a mapping with description, published (optional) and params"),
        (b"description: x\npublished: y\nparams: 3\n", "is not a mapping with description"),
        (b"description: [x\n", "is not valid YAML"),
    ],
    ids=["latin-1", "empty", "params not a mapping", "yaml syntax"],
)
def test_a_preset_file_that_is_not_a_preset_is_one_line_naming_it(tmp_path, text, says):
    (tmp_path / "mine.yaml").write_bytes(text)
    with pytest.raises(UserFileError) as info:
        load_preset("mine", folder=tmp_path)
    assert f"preset file '{tmp_path / 'mine.yaml'}'" in str(info.value)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_truncated_prepared_data_is_one_line_saying_to_prepare_again(here: Path):
    data = here / "data" / "prepared" / "data.pt"
    whole = data.read_bytes()
    with written(data, whole[: len(whole) // 2]):
        line = probe(here, ["train"])
    assert "prepared data in 'data/prepared' cannot be read" in line, line
    assert "genbench prepare" in line


# ------------------------------------------------------- class 6: slow or noisy failures
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


DATABASES = {
    # id: (the URI for a port, whether the port answers)
    "postgresql+psycopg refused": ("postgresql+psycopg://u:s3cret@127.0.0.1:{port}/mlflow", False),
    "postgresql refused": ("postgresql://u:s3cret@127.0.0.1:{port}/mlflow", False),
    "postgresql silent": ("postgresql://u:s3cret@127.0.0.1:{port}/mlflow", True),
    "mysql refused": ("mysql://u:s3cret@127.0.0.1:{port}/mlflow", False),
}


@pytest.mark.parametrize("case", DATABASES)
def test_copy_runs_from_a_dead_database_fails_within_30_s_in_one_line(here: Path, case: str):
    uri, answers = DATABASES[case]
    with silent_port() if answers else contextlib.nullcontext(closed_port()) as port:
        source = uri.format(port=port)
        t0 = time.monotonic()
        line = probe(here, ["copy-runs", "--from", source])
        seconds = time.monotonic() - t0
    assert seconds < 30, seconds
    assert f"127.0.0.1:{port}/mlflow cannot be reached within 5 s" in line, line
    assert "s3cret" not in line  # the URI is named, its password is not


def test_a_dead_database_as_the_tracking_uri_fails_within_30_s_in_one_line(here: Path):
    uri = f"postgresql+psycopg://u:s3cret@127.0.0.1:{closed_port()}/mlflow"
    t0 = time.monotonic()
    line = probe(here, ["train"], MLFLOW_TRACKING_URI=uri)
    assert time.monotonic() - t0 < 30
    assert "cannot be reached" in line and "s3cret" not in line, line


@contextlib.contextmanager
def read_only_store(repo: Path) -> Iterator[None]:
    """The store made read-only as SQLite sees it (its header's write version above 2), so the
    test holds even as root, whom file permissions do not stop."""
    db = repo / "mlflow.db"
    whole = db.read_bytes()
    db.write_bytes(whole[:18] + b"\x03" + whole[19:])
    try:
        yield
    finally:
        db.write_bytes(whole)


READ_ONLY = {
    # id: (command line, what the line says)
    "train": (
        ["train", "--params", "fast.yaml"],
        "mlflow.db: (sqlite3.OperationalError) attempt to write a readonly database",
    ),
    "copy-runs into it": (["copy-runs", "--from", "sqlite:///copy.db"], "readonly database"),
    "benchmark": (["benchmark", "--models", "pixelcnn", "--seeds", "0"], "mlflow.db is read-only"),
}


@pytest.mark.parametrize("case", READ_ONLY)
def test_a_read_only_store_is_one_line_without_mlflows_own_logs(here: Path, case: str):
    """MLflow logs a store's failure (88 lines of tracebacks and retries) through a stream
    that writes to the current sys.stderr, so an in-process command shows them too."""
    args, says = READ_ONLY[case]
    fast = params_with(here, eval={"curve_points": 0})  # no quality curve to set up first
    shutil.copy(here / "mlflow.db", here / "copy.db")  # a store to copy runs from
    try:
        with written(here / "fast.yaml", fast), read_only_store(here):
            line = probe(here, args)
    finally:
        (here / "copy.db").unlink()
    assert says in line and "[SQL:" not in line, line


# ----------------------------------------------------------------- class 8: two small bugs
def test_the_server_extra_installs_the_bundled_postgresql_the_readme_promises():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {req.split("[")[0].split(">")[0].strip() for req in extras["server"]}
    assert {"pgserver", "psycopg"} <= names
    assert (
        ".[server]'   # psycopg and a bundled PostgreSQL (pgserver)"
        in (ROOT / "README.md").read_text()
    )
