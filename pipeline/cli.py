"""`genbench`: one command per DVC stage, plus `benchmark`, the whole suite and its report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from gen.data import dataset_id
from pipeline import protocol_cmd, server_cmd, signals, tracking
from pipeline.models_command import models
from pipeline.params import load_params
from pipeline.steps_cmd import steps
from pipeline.user_errors import UserError, user_errors


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


@click.group(
    cls=signals.StoppableGroup,
    commands=[models, steps, *protocol_cmd.COMMANDS, *server_cmd.COMMANDS],
)
def main() -> None:
    """genbench: train, sample and evaluate generative image models side by side."""


# command -> (function in pipeline.stages, help); train's is in pipeline.train_stage. Imported
# lazily: `genbench --help` stays fast.
STAGES = {
    "prepare": ("prepare", "Load the data set named in params and write data/prepared/."),
    "classifier": ("train_classifier", "The ruler: classifier.protocol's, or train one."),
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
        from pipeline import lock, stages

        lock.check_free(f"genbench {name}")
        _print(getattr(stages, function)(load_params(params_path)))


for _name, (_function, _doc) in STAGES.items():
    if _name not in ("train", "classifier"):  # below: each starts processes of its own
        _add_stage(_name, _function, _doc)


@main.command("classifier", help=STAGES["classifier"][1])
@params_option
@user_errors
def classifier_command(params_path: str) -> None:
    from pipeline import launch, lock, stages

    lock.check_free("genbench classifier")
    p = load_params(params_path)  # a bad param is said here, before any process starts
    if stages.ruler_pinned() or p.classifier.protocol is not None:  # held, or no training
        _print(stages.train_classifier(p))
        return
    if os.environ.get(launch.CHILD):  # started with the hold, yet without it: never loop
        raise UserError(f"the classifier's process did not start with {stages.RULER_ENV}")
    try:  # the same command in a process started with the ruler's vector instructions held
        click.echo(launch.again_with(["classifier", "--params", params_path], stages.RULER_ENV))
    except launch.LaunchError as exc:
        raise UserError(str(exc)) from None


@main.command("train", help=STAGES["train"][1])
@params_option
@click.option(
    "--nproc",
    default=None,
    type=click.IntRange(1, 64),
    help="processes training together (torchrun + DDP; default: train.nproc)",
)
@user_errors
def train_command(params_path: str, nproc: int | None) -> None:
    from gen import distributed
    from pipeline import launch, lock, train_stage

    lock.check_free("genbench train")
    p = load_params(params_path)
    if distributed.launched():  # a worker torchrun started: it knows how many there are
        nproc = int(os.environ["WORLD_SIZE"])
    if nproc is not None:
        p.train.nproc = nproc
        p.train.validate()
    if p.train.nproc > 1:
        p.check_nproc()
        if not distributed.launched():  # start the workers: each runs this command again
            try:
                launch.torchrun(params_path, p.train.nproc, p.train.threads, p.data.name)
            except launch.LaunchError as exc:
                raise UserError(str(exc)) from None
            return
    result = train_stage.train_model(p)
    if os.environ.get("RANK", "0") == "0":  # one result, rank 0's
        _print(result)


@main.command("report")
@params_option
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path())
@click.option(
    "--benchmark",
    "benchmark_run",
    default=None,
    help="a benchmark's name (all its parts, from any host, merged) or one MLflow run id "
    "(default: the newest benchmark's name)",
)
@user_errors
def report(params_path: str, out_dir: str, benchmark_run: str | None) -> None:
    """Compile reports/benchmark.{md,html} from a benchmark's runs in MLflow."""
    from gen import registry
    from pipeline.report import build_report

    p = load_params(params_path)
    order = p.benchmark.listed() or list(registry.all_models())  # as the benchmark orders them
    md, page = build_report(dataset_id(p.data), Path(out_dir), order, benchmark_run)
    click.echo(f"wrote {md} and {page}")


def _names(text: str | None) -> list[str] | None:
    """`--models a,b`: the names; None (the params' default) when not given or empty."""
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--seeds={text!r} must be comma-separated integers") from None


@main.command("benchmark")
@params_option
@click.option("--models", default=None, help="comma-separated models (default: benchmark.models)")
@click.option("--seeds", default=None, help="comma-separated seeds (default: benchmark.seeds)")
@click.option(
    "--jobs",
    default=None,
    type=click.IntRange(1, 64),
    help="experiments at once, each in a DVC temp copy (default: benchmark.jobs)",
)
@click.option(
    "--name",
    default=None,
    help="the benchmark's name: hosts that run parts of one benchmark against one tracking "
    "server use the same name, and the report merges them (default: benchmark-<time>)",
)
@click.option(
    "--suite", default=None, help="a data set's recipe: digits, mnist, fashion_mnist, cifar10, auto"
)
@click.option("--dry-run", is_flag=True, help="say what would run (and what is left out); stop")
@user_errors
def benchmark_command(params_path: str, models: str | None, seeds: str | None, **opts: Any) -> None:
    """One DVC experiment per (model, seed) (`dvc exp run -S model=NAME -S seed=S`) as child
    runs of one MLflow benchmark run, the `data` row, then the report (of every part of the
    benchmark's name finished so far)."""
    from pipeline import lock
    from pipeline.benchmark import run

    # Held before params.yaml is read: a benchmark running here may have edited it.
    with lock.hold(lock.command_line()):
        p = load_params(params_path, opts["suite"])  # the suite's values over params.yaml's
        run(p, params_path, _names(models), _int_list(seeds), **opts)


@main.command("copy-runs")
@params_option
@click.option(
    "--from",
    "source",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="the store to copy from (a relative sqlite path is taken from the repository root)",
)
@click.option("--experiment", default=None, help="default: the data set of params.yaml")
@user_errors
def copy_runs(params_path: str, source: str, experiment: str | None) -> None:
    """Copy a store's runs (params, metric histories, tags, artifacts, logged models, datasets)
    into MLFLOW_TRACKING_URI, say a shared tracking server. Runs copied before are skipped."""
    from pipeline.copy_runs import copy_experiment

    p = load_params(params_path)
    source, target = tracking.resolve_uri(source), tracking.tracking_uri()
    if source == target:
        raise UserError(f"--from={source} is the current store: set MLFLOW_TRACKING_URI first")
    if source.startswith("sqlite:///") and not Path(source[len("sqlite:///") :]).exists():
        raise UserError(f"--from={source}: no such SQLite store")
    done = copy_experiment(source, experiment or dataset_id(p.data), echo=click.echo)
    click.echo(f"{len(done)} runs of {source} are in {target}")


@main.command("throughput")
@params_option
@click.option("--models", default=None, help="comma-separated models (default: benchmark.models)")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1, 100000))
@click.option("--samples", default=100, show_default=True, type=click.IntRange(0, 100000))
@click.option(
    "--batch-size", default=None, type=click.IntRange(1, 100000), help="default: each model's"
)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (default: train.device)")
@click.option("--threads", default=None, type=click.IntRange(1, 256), help="default: train.threads")
@click.option("--compile/--no-compile", "compile", default=None, help="default: train.compile")
@click.option(
    "--channels-last/--no-channels-last", default=None, help="default: train.channels_last"
)
@user_errors
def throughput(params_path: str, models: str | None, **settings: Any) -> None:
    """Train and sample images per second of each model, in this process, through the code
    `genbench train` and `genbench sample` run (random data of the data set's shape)."""
    from pipeline.throughput_table import print_table

    # The other options go to print_table under their own names: it types and documents them.
    print_table(load_params(params_path), _names(models), **settings)


@main.command("preset")
@click.argument("name", required=False)
@click.option("--run", "run_now", is_flag=True, help="run the preset now as a DVC experiment")
@user_errors
def preset(name: str | None, run_now: bool) -> None:
    """List the paper-scale presets, or show (and with --run, run) preset NAME."""
    import shlex

    from pipeline import lock
    from pipeline.benchmark import dvc
    from pipeline.presets import available, load_preset

    if name is None:
        for item in available():
            pr = load_preset(item)
            click.echo(f"{item}: {pr.description}\n    published: {pr.published}")
        return
    pr = load_preset(name)
    cmd = ["dvc", "exp", "run", *pr.set_flags(), "-n", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    click.echo(f"{pr.description}\npublished: {pr.published}\n{shlex.join(cmd)}")
    if not run_now:
        return
    with lock.hold(lock.command_line()):  # its workspace experiment edits params.yaml
        if dvc(*cmd[1:]).returncode:
            raise click.ClickException(f"preset '{name}' failed (see the output above)")


if __name__ == "__main__":
    main()
