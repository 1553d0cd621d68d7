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
    "reference": ("reference", "Score real training images like samples: the report's data row."),
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
@click.option(
    "--benchmark",
    "benchmark_run",
    default=None,
    help="a benchmark's MLflow run id (default: the latest benchmark)",
)
@user_errors
def report(params_path: str, out_dir: str, benchmark_run: str | None) -> None:
    """Compile reports/benchmark.{md,html} from a benchmark's runs in MLflow."""
    from pipeline.report import ReportError, build_report

    p = load_params(params_path)
    try:
        md, page = build_report(
            dataset_id(p.data), Path(out_dir), p.benchmark.models, benchmark_run
        )
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
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


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.UsageError(f"--seeds={text!r} must be comma-separated integers") from None


def _data_row(dataset: str, protocol: str) -> bool:
    """Whether the store has a finished `data` row for this protocol."""
    from pipeline import tracking

    runs = tracking.search(dataset, f"tags.model = 'data' and tags.protocol = '{protocol}'")
    return not runs.empty


@main.command("benchmark")
@params_option
@click.option("--models", default=None, help="comma-separated models (default: benchmark.models)")
@click.option(
    "--seeds", default=None, help="comma-separated training seeds (default: benchmark.seeds)"
)
@click.option(
    "--jobs",
    default=None,
    type=click.IntRange(1, 64),
    help="parallel experiments through DVC's queue (default: benchmark.jobs)",
)
@user_errors
def benchmark(params_path: str, models: str | None, seeds: str | None, jobs: int | None) -> None:
    """One DVC experiment per (model, seed) (`dvc exp run -S model=NAME -S seed=S`) as child
    runs of one MLflow benchmark run, the `data` row, then the report."""
    from gen.registry import model_class
    from pipeline import provenance, stages, tracking
    from pipeline.report import ReportError, build_report

    p = load_params(params_path)
    names = [m.strip() for m in models.split(",")] if models else list(p.benchmark.models)
    seed_list = _int_list(seeds) or list(p.benchmark.seeds)
    jobs = jobs or p.benchmark.jobs
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
    dataset = dataset_id(p.data)
    timings: list[tuple[str, float]] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    try:
        # The ruler and the data row first, in the workspace: every experiment then takes
        # prepare and classifier from DVC's cache.
        t0 = time.perf_counter()
        click.echo("==> dvc repro reference (data, classifier, data row)", err=True)
        if _dvc("repro", "reference").returncode:
            raise click.ClickException("preparing the data, classifier or data row failed")
        fp = provenance.fingerprint(
            p.raw.get("data", {}), p.raw.get("eval", {}), stages.PREPARED, stages.CLASSIFIERS
        )
        if not _data_row(dataset, fp["protocol"]):  # the stage was cached but the run is gone
            if _dvc("repro", "--force", "--single-item", "reference").returncode:
                raise click.ClickException("scoring the data row failed")
        timings.append(("data + classifier + data row", time.perf_counter() - t0))
        settings = {"models": ",".join(names), "seeds": ",".join(map(str, seed_list))}
        parent = tracking.start_benchmark(dataset, f"benchmark-{stamp}", settings)
        tracking.set_tags(parent, fp)
        os.environ[tracking.PARENT_ENV] = parent
        runs = [(m, s) for s in seed_list for m in names]
        if jobs == 1:
            for name, seed in runs:
                label = f"{name}-s{seed}"
                click.echo(f"==> dvc exp run evaluate -S model={name} -S seed={seed}", err=True)
                t0 = time.perf_counter()
                exp = ["exp", "run", "evaluate", "-S", f"model={name}", "-S", f"seed={seed}"]
                if _dvc(*exp, "-n", f"{label}-{stamp}").returncode:
                    failed.append(label)
                else:
                    # A stage DVC found unchanged made no new run: its earlier run joins.
                    info = json.loads(stages.RUN_INFO.read_text())
                    tracking.adopt(info["run_id"], parent)
                timings.append((label, time.perf_counter() - t0))
        else:
            for name, seed in runs:
                label = f"{name}-s{seed}"
                exp = ["exp", "run", "evaluate", "--queue", "-S", f"model={name}"]
                if _dvc(*exp, "-S", f"seed={seed}", "-n", f"{label}-{stamp}").returncode:
                    failed.append(label)
            t0 = time.perf_counter()
            if _dvc("exp", "run", "--run-all", "--jobs", str(jobs)).returncode:
                failed.append("queue")
            timings.append((f"{len(runs)} queued experiments", time.perf_counter() - t0))
        tracking.finish(parent, "FAILED" if failed else "FINISHED")
    finally:
        os.environ.pop(tracking.PARENT_ENV, None)
        path.write_text(original)  # `dvc exp run -S` edits params.yaml in the workspace
    try:
        md, page = build_report(dataset, Path("reports"), names, parent)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    timings.append(("total", time.perf_counter() - t_all))
    click.echo("timings (s):", err=True)
    for label, seconds in timings:
        click.echo(f"  {label:<32} {seconds:8.1f}", err=True)
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
