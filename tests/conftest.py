"""Shared fixtures: a throw-away copy of the project as its own git + DVC repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gen.data import DataConfig, Split
from gen.datasets import load

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Params small enough that a whole pipeline runs in seconds on a CPU.
TINY = {
    "classifier": {"epochs": 1, "domain_epochs": 1},
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


@pytest.fixture
def project(tmp_path: Path):
    """A copy of the project (code, params, dvc.yaml) with tiny params, as a committed git repo."""
    return make_project(tmp_path / "repo")


def make_project(repo: Path) -> Path:
    """The project copied into `repo` with tiny params, committed, with DVC initialised."""
    repo.mkdir()
    for name in ("gen", "pipeline"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
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


@pytest.fixture
def prepared(project: Path, monkeypatch) -> Path:
    """The tiny project with its data, classifiers and data row made in-process (CLI stages)."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    for stage in ("prepare", "classifier", "reference"):
        genbench(stage)
    return project


def query(repo: Path, sql: str, *args) -> list[tuple]:
    """Rows of `sql` on the repository's own MLflow store (mlflow.db), read-only."""
    import sqlite3

    con = sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
