"""`genbench`: one command per DVC stage, plus `benchmark`, the whole suite and its report."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from gen.captions import CaptionError
from gen.config import ConfigError
from gen.data import DataError, dataset_id
from gen.domains import DomainError
from gen.metrics import MetricError
from gen.trainer import CheckpointError
from pipeline.params import load_params

USER_ERRORS = (
    ConfigError,
    DataError,
    CaptionError,
    DomainError,
    CheckpointError,
    MetricError,
    FileNotFoundError,
)


def user_errors(fn):
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.UsageError(str(exc)) from None

    return wrapper


def _print(result: dict) -> None:
    click.echo(json.dumps(result, indent=2, default=str))


params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(),
    help="params file to read",
)


@click.group()
def main() -> None:
    """genbench: train, sample and evaluate generative image models side by side."""


# command -> (function in pipeline.stages, help). Imported lazily: `genbench --help` stays fast.
STAGES = {
    "prepare": ("prepare", "Load the data set named in params and write data/prepared/."),
    "classifier": ("train_classifier", "Train the data set's classifier (FID/IS features)."),
    "train": ("train_model", "Train the model named by `model` in params; resumes after a kill."),
    "sample": ("sample", "Draw eval.n_samples images and the model's figures."),
    "evaluate": ("evaluate", "Compute the metrics into metrics.json and the MLflow run."),
}


def _add_stage(name: str, function: str, doc: str) -> None:
    @main.command(name, help=doc)
    @params_option
    @user_errors
    def command(params_path: str) -> None:
        from pipeline import stages

        _print(getattr(stages, function)(load_params(params_path)))


for _name, (_function, _doc) in STAGES.items():
    _add_stage(_name, _function, _doc)


@main.command("report")
@params_option
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path())
@user_errors
def report(params_path: str, out_dir: str) -> None:
    """Compile reports/benchmark.{md,html} from the latest finished MLflow run of each model."""
    from pipeline.report import build_report

    p = load_params(params_path)
    md, page = build_report(dataset_id(p.data), Path(out_dir), p.benchmark.models)
    click.echo(f"wrote {md} and {page}")


def _tool_env() -> dict[str, str]:
    """PATH with this interpreter's bin folder first, so DVC stages find `genbench` and `dvc`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], env=_tool_env(), check=False)


def _git_identity() -> bool:
    def get(key: str) -> str:
        out = subprocess.run(["git", "config", key], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return bool(get("user.name") and get("user.email"))


@main.command("benchmark")
@params_option
@click.option("--models", default=None, help="comma-separated models (default: benchmark.models)")
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="parallel experiments through DVC's queue (experimental in DVC)",
)
@user_errors
def benchmark(params_path: str, models: str | None, jobs: int) -> None:
    """Run one DVC experiment per model (`dvc exp run -S model=NAME`), then write the report."""
    from gen.registry import model_class
    from pipeline.report import build_report

    p = load_params(params_path)
    names = [m.strip() for m in models.split(",")] if models else list(p.benchmark.models)
    for name in names:
        model_class(name)  # unknown names fail before anything runs
    if not Path(".dvc").is_dir():
        raise click.UsageError(
            "not a DVC repository: run `genbench benchmark` from the repository root"
        )
    if not _git_identity():
        raise click.UsageError(
            "DVC experiments commit to git, which has no identity here: set "
            "`git config user.name ...` and `git config user.email ...` first"
        )
    path = Path(params_path)
    original = path.read_text()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    failed: list[str] = []
    try:
        # Up to `evaluate` only: the report is built once, after the last experiment.
        if jobs == 1:
            for name in names:
                click.echo(f"==> dvc exp run evaluate -S model={name}", err=True)
                exp = ["exp", "run", "evaluate", "-S", f"model={name}", "-n", f"{name}-{stamp}"]
                if _dvc(*exp).returncode:
                    failed.append(name)
        else:
            for name in names:
                exp = ["exp", "run", "evaluate", "--queue", "-S", f"model={name}"]
                if _dvc(*exp, "-n", f"{name}-{stamp}").returncode:
                    failed.append(name)
            if _dvc("exp", "run", "--run-all", "--jobs", str(jobs)).returncode:
                failed.append("queue")
    finally:
        path.write_text(original)  # `dvc exp run -S` edits params.yaml in the workspace
    md, page = build_report(dataset_id(p.data), Path("reports"), names)
    click.echo(f"wrote {md} and {page}")
    if failed:
        raise click.ClickException(
            f"experiments failed for: {', '.join(failed)} (see output above)"
        )


@main.command("preset")
@click.argument("name", required=False)
@click.option("--run", "run_now", is_flag=True, help="run the preset now as a DVC experiment")
@user_errors
def preset(name: str | None, run_now: bool) -> None:
    """List the paper-scale presets, or show (and with --run, run) preset NAME."""
    import shlex

    from pipeline.presets import available, load_preset

    if name is None:
        for item in available():
            pr = load_preset(item)
            click.echo(f"{item}: {pr.description}\n    published: {pr.published}")
        return
    pr = load_preset(name)
    cmd = ["dvc", "exp", "run", *pr.set_flags(), "-n", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    click.echo(f"{pr.description}\npublished: {pr.published}\n{shlex.join(cmd)}")
    if run_now and _dvc(*cmd[1:]).returncode:
        raise click.ClickException(f"preset '{name}' failed (see the output above)")


if __name__ == "__main__":
    main()
