"""Shared fixtures: a throw-away copy of the project as its own git + DVC repository."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock

from gen.data import DataConfig, Split
from gen.datasets import load

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Params small enough that a whole pipeline runs in seconds on a CPU. The tiny project trains
# its own ruler (protocol: null) rather than import the shipped one, as the tests of training
# it expect; tests of protocol files import one themselves.
TINY = {
    "classifier": {"epochs": 1, "domain_epochs": 1, "protocol": None},
    "train": {"log_every": 2, "checkpoint_every": 2},
    "eval": {
        "n_samples": 40,
        "iwae_k": 2,
        "batch_size": 40,
        "kid_subset_size": 20,
        "n_boot": 3,
        "reference_draws": 2,
    },
    "pixelcnn": {"steps": 4, "channels": 8, "layers": 1},
    "vae": {"steps": 4, "hidden": 8, "latent_dim": 2},
    "dcgan": {"steps": 4, "g_channels": 8, "d_channels": 8, "z_dim": 4},
    "puzzlegan": {"steps": 4, "g_channels": 4, "d_channels": 4, "z_dim": 2},
    "text2image": {"steps": 4, "g_channels": 4, "d_channels": 4, "z_dim": 2},
    "progan": {
        "steps": 4,
        "g_channels": 8,
        "d_channels": 8,
        "z_dim": 4,
        "stage_steps": 2,
        "fade_steps": 1,
    },
    "cyclegan": {"steps": 4, "g_channels": 4, "d_channels": 4, "res_blocks": 1},
    "stargan": {"steps": 4, "g_channels": 4, "d_channels": 4, "res_blocks": 1},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def tool_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "true"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_project(repo: Path) -> Path:
    """The project copied into `repo` with tiny params, committed, with DVC initialised."""
    repo.mkdir()
    for name in ("gen", "pipeline"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "protocols", repo / "protocols")  # a dependency of the classifier stage
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "genbench test"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "init"], repo)
    return repo


# Where an MLflow sqlite store records absolute paths: the artifact folders of its experiments
# and runs.
STORE_PATHS = (("experiments", "artifact_location"), ("runs", "artifact_uri"))


def copy_project(template: Path, repo: Path) -> Path:
    """A copy of a template project at `repo` (git, DVC and its cache included) that owns all
    it holds: its MLflow store's artifact paths move from the template's folder to its own."""
    shutil.copytree(template, repo, symlinks=True)
    db = repo / "mlflow.db"
    if db.exists():
        con = sqlite3.connect(db)
        try:
            with con:
                for table, column in STORE_PATHS:
                    con.execute(
                        f"update {table} set {column} = replace({column}, ?, ?)",
                        (f"{template}{os.sep}", f"{repo}{os.sep}"),
                    )
        finally:
            con.close()
    return repo


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under `folder`."""
    return {
        str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns)
        for f in folder.rglob("*")
        if f.is_file() and not f.is_symlink()
    }


def _template(repo: Path) -> Iterator[Path]:
    """`repo` as a session's template; afterwards, a check that no test wrote into it (tests
    work on copies, so that each starts from the same state whatever ran before)."""
    before = _files(repo)
    yield repo
    assert _files(repo) == before, f"a test changed the template {repo}"


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Iterator[Path]:
    """A template `build` makes at `<folder>/repo`, once per test run. Under pytest-xdist the
    first worker to ask builds it in the folder all workers share and the others wait for it
    (a file lock), so no worker retrains the rulers another has trained."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
    else:
        folder = tmp_path_factory.getbasetemp().parent / name
    repo, done = folder / "repo", folder / "built"
    with FileLock(f"{folder}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(repo)
            done.touch()
    yield from _template(repo)


@pytest.fixture(scope="session")
def project_template(tmp_path_factory) -> Iterator[Path]:
    """The tiny project made once (`git init`, `dvc init` and a commit cost seconds a test)."""
    yield from _built_once(tmp_path_factory, "template", make_project)


@pytest.fixture
def project(project_template: Path, tmp_path: Path) -> Path:
    """A copy of the project (code, params, dvc.yaml) with tiny params, as a committed git repo."""
    return copy_project(project_template, tmp_path / "repo")


def set_params(repo: Path, **sections) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(_merge(params, sections), sort_keys=False))


# Small helpers the model tests share: seeded generators and parameter snapshots.
def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def unchanged(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = snapshot(module)
    return all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread and leave the other core free."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> Split:
    """The bundled sklearn digits, loaded once."""
    return load(DataConfig())


def genbench(*args: str) -> str:
    """Run a `genbench` command in-process; it must succeed."""
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def with_a_finished_run(repo: Path, *extra: str) -> Path:
    """`repo` after train, sample and evaluate of the model its params name (one FINISHED
    run), then the `extra` commands, in-process: earlier results for tests to leave alone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
        mp.setenv("CI", "true")
        for command in ("train", "sample", "evaluate", *extra):
            genbench(command)
    return repo


@pytest.fixture(scope="session")
def prepared_template(project_template: Path, tmp_path_factory, one_thread) -> Iterator[Path]:
    """The tiny project with its data, classifiers and data row made in-process (CLI stages),
    once: training the rulers is most of what preparing costs."""

    def build(repo: Path) -> None:
        copy_project(project_template, repo)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(repo)
            mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
            for stage in ("prepare", "classifier", "reference"):
                genbench(stage)

    yield from _built_once(tmp_path_factory, "prepared", build)


@pytest.fixture
def prepared(prepared_template: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the prepared tiny project, the working directory, with its own MLflow store."""
    repo = copy_project(prepared_template, tmp_path / "repo")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    return repo


@pytest.fixture(scope="session")
def reproduced_template(project_template: Path, tmp_path_factory) -> Iterator[Path]:
    """The tiny project after `dvc repro reference`, once: the data, classifiers and data row
    in dvc.lock, DVC's cache and the store, as a benchmark's first step leaves them."""

    def build(repo: Path) -> None:
        copy_project(project_template, repo)
        run([sys.executable, "-m", "dvc", "repro", "reference"], repo)

    yield from _built_once(tmp_path_factory, "reproduced", build)


@pytest.fixture
def reproduced(reproduced_template: Path, tmp_path: Path) -> Path:
    """A copy of the tiny project after `dvc repro reference`: DVC runs only the later stages."""
    return copy_project(reproduced_template, tmp_path / "repo")


def query(repo: Path, sql: str, *args) -> list[tuple]:
    """Rows of `sql` on the repository's own MLflow store (mlflow.db), read-only."""
    con = sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
