"""`genbench`: one command per DVC stage, plus `benchmark`, the whole suite and its report."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO

import click

from gen.captions import CaptionError
from gen.checkpoint import CheckpointError
from gen.config import ConfigError
from gen.data import DataError, dataset_id
from gen.domains import DomainError
from gen.metrics import MetricError
from pipeline import store_check, tracking
from pipeline.errors import ReportError, ServerError, TrackingError
from pipeline.params import load_params

USER_ERRORS = (
    ConfigError,
    DataError,
    CaptionError,
    DomainError,
    CheckpointError,
    MetricError,
    FloatingPointError,  # training diverged: the message names the model and the step
    TrackingError,
    ReportError,
    ServerError,
    # Paths in the way or not writable (`runs` a file, `--out` read-only), missing inputs.
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class UserError(click.ClickException):
    """A mistake the user can fix: one `Error:` line on stderr, exit status 2, no usage text."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text


def _params_hint() -> str:
    """A failed workspace `dvc exp run -S ...` leaves its edits in params.yaml: say so."""
    if not os.environ.get("DVC_EXP_NAME") or tracking.EXPS_MARKER in str(Path.cwd()) + os.sep:
        return ""
    edited = subprocess.run(
        ["git", "diff", "--quiet", "--", "params.yaml"], capture_output=True, check=False
    )
    if edited.returncode != 1:
        return ""
    return " (dvc exp run left its -S edits in params.yaml; `git checkout params.yaml` undoes them)"


def _is_store_error(exc: BaseException) -> bool:
    """MLflow's own errors (a store it cannot migrate, a server that said no)."""
    errors = sys.modules.get("mlflow.exceptions")
    return errors is not None and isinstance(exc, errors.MlflowException)


def user_errors(fn):
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise UserError(_one_line(exc) + _params_hint()) from None
        except Exception as exc:
            if _is_store_error(exc):
                uri = tracking.tracking_uri()
                raise UserError(f"MLflow store {uri}: {_one_line(exc)}"[:2000]) from None
            raise

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
    if _name not in ("train", "classifier"):  # below: each starts processes of its own
        _add_stage(_name, _function, _doc)


@main.command("classifier", help=STAGES["classifier"][1])
@params_option
@user_errors
def classifier_command(params_path: str) -> None:
    from pipeline import launch, stages

    p = load_params(params_path)  # a bad param is said here, before any process starts
    if stages.ruler_pinned():
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
    from pipeline import launch, train_stage

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
                launch.torchrun(params_path, p.train.nproc, p.train.threads)
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
    from pipeline.report import build_report

    p = load_params(params_path)
    md, page = build_report(dataset_id(p.data), Path(out_dir), p.benchmark.models, benchmark_run)
    click.echo(f"wrote {md} and {page}")


def _tool_env() -> dict[str, str]:
    """PATH with this interpreter's bin folder first, so DVC stages find `genbench` and `dvc`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _dvc(*args: str, log: IO | int | None = None) -> subprocess.CompletedProcess:
    """`dvc ARGS` with this environment's tools; its output to `log` when given."""
    out = {"stdout": log, "stderr": subprocess.STDOUT} if log is not None else {}
    return subprocess.run([sys.executable, "-m", "dvc", *args], env=_tool_env(), check=False, **out)


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--seeds={text!r} must be comma-separated integers") from None


def _data_row(dataset: str, protocol: str) -> bool:
    """Whether the store has a finished `data` row for this protocol."""
    runs = tracking.search(dataset, f"tags.model = 'data' and tags.protocol = '{protocol}'")
    return not runs.empty


def _preflight(p, names: list[str], seeds: list[int]) -> None:
    """Everything visible before the first experiment: models, their data, the repository and
    the tracking store. A benchmark that cannot finish must not start."""
    from gen.registry import check_data

    for name in names:
        check_data(name, p.model_section(name), p.data)
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds={','.join(map(str, seeds))} must be distinct integers >= 0")
    if not Path(".dvc").is_dir():
        raise UserError("not a DVC repository: run `genbench benchmark` from the repository root")
    if not (_git("config", "user.name") and _git("config", "user.email")):
        raise UserError(
            "DVC experiments commit to git, which has no identity here: set "
            "`git config user.name ...` and `git config user.email ...` first"
        )
    store_check.check_store(tracking.tracking_uri())


BENCHMARK_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")  # safe in MLflow filters and file names


def _experiment_run_id(exp_name: str) -> str | None:
    """The MLflow run a `--temp` experiment trained into (its run.json, committed to its ref)."""
    from pipeline import stages

    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps").splitlines()
    ref = next((r for r in refs if r.endswith("/" + exp_name)), None)
    text = _git("show", f"{ref}:{stages.RUN_INFO.as_posix()}") if ref else ""
    try:
        return json.loads(text)["run_id"] if text else None
    except (ValueError, KeyError):
        return None


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
    help="experiments at once, each in a DVC temp copy (default: benchmark.jobs)",
)
@click.option(
    "--name",
    default=None,
    help="the benchmark's name: hosts that run parts of one benchmark against one tracking "
    "server use the same name, and the report merges them (default: benchmark-<time>)",
)
@user_errors
def benchmark(
    params_path: str, models: str | None, seeds: str | None, jobs: int | None, name: str | None
) -> None:
    """One DVC experiment per (model, seed) (`dvc exp run -S model=NAME -S seed=S`) as child
    runs of one MLflow benchmark run, the `data` row, then the report (of every part of the
    benchmark's name finished so far)."""
    from pipeline import provenance, stages
    from pipeline.report import build_report

    p = load_params(params_path)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    names = names or list(p.benchmark.models)
    seed_list = _int_list(seeds) or list(p.benchmark.seeds)
    jobs = jobs or p.benchmark.jobs
    if name is not None and not BENCHMARK_NAME.fullmatch(name):
        raise UserError(
            f"--name={name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-'"
        )
    _preflight(p, names, seed_list)
    path = Path(params_path)
    original = path.read_text()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = name or f"benchmark-{stamp}"
    dataset = dataset_id(p.data)
    timings: list[tuple[str, float]] = []
    planned = [(m, s) for s in seed_list for m in names]
    t_all = time.perf_counter()
    try:
        # The ruler and the data row first, in the workspace: every experiment then takes
        # prepare and classifier from DVC's cache. This also makes the store, so parallel
        # workers never race to create it.
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
        parent = tracking.start_benchmark(dataset, name, settings)
        tracking.set_tags(parent, fp)
        os.environ[tracking.PARENT_ENV] = parent
        with tracking.failing(parent):
            if jobs > 1:
                t0 = time.perf_counter()
                planned = _longest_first(p, planned)
                timings.append(("cost probe (order of experiments)", time.perf_counter() - t0))
            _run_experiments(planned, stamp, jobs, parent, name, timings)
            _apply_params_model(p, planned, stamp)
            failed = _unfinished(dataset, parent, planned)
            tracking.finish(parent, "FAILED" if failed else "FINISHED")
    finally:
        os.environ.pop(tracking.PARENT_ENV, None)
        if path.read_text() != original:
            path.write_text(original)  # `dvc exp run -S` edits params.yaml in the workspace
    t0 = time.perf_counter()
    try:
        md, page = build_report(dataset, Path("reports"), names, name)
    except ReportError as exc:
        if not failed:
            raise
        md = page = None
        click.echo(f"no report: {exc}", err=True)
    timings.append(("report", time.perf_counter() - t0))
    timings.append(("total", time.perf_counter() - t_all))
    lines = ["timings (s):", *(f"  {label:<36} {sec:8.1f}" for label, sec in timings)]
    lines += _stage_table(dataset, parent, names)
    click.echo("\n".join(lines), err=True)
    tracking.log_text(parent, "\n".join(lines) + "\n", "timings.txt")
    if md is not None:
        click.echo(f"wrote {md} and {page}")
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(planned)} experiments did not finish: {', '.join(failed)} "
            "(see the output above; the report lists them as failed)"
        )


def _longest_first(p, planned: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The order of parallel runs: longest first (a few measured training steps x steps), so
    no long experiment starts last and runs alone while the other workers are idle."""
    from gen.registry import model_class
    from pipeline.throughput import step_seconds

    cost = {}
    for name in dict.fromkeys(m for m, _ in planned):
        section = p.model_section(name)
        steps = section.get("steps", model_class(name).Config().steps)
        try:
            cost[name] = step_seconds(name, section, p.data) * steps
        except Exception:  # an estimate only: a model the probe cannot run keeps its place
            cost[name] = 0.0
    return sorted(planned, key=lambda ms: -cost[ms[0]])


def _run_experiments(
    planned: list[tuple[str, int]],
    stamp: str,
    jobs: int,
    parent: str,
    bench_name: str,
    timings: list[tuple[str, float]],
) -> None:
    """The DVC experiments, one after another in the workspace, or `jobs` at a time each in a
    temporary copy (`dvc exp run --temp`); each one's MLflow run becomes a child of `parent`
    (also a run DVC found unchanged and did not rerun)."""
    from pipeline import stages

    if jobs == 1:
        for name, seed in planned:
            label = f"{name}-s{seed}"
            click.echo(f"==> dvc exp run evaluate -S model={name} -S seed={seed}", err=True)
            t0 = time.perf_counter()
            exp = ["exp", "run", "evaluate", "-S", f"model={name}", "-S", f"seed={seed}"]
            if _dvc(*exp, "-n", f"{label}-{stamp}").returncode == 0:
                info = json.loads(stages.RUN_INFO.read_text())
                tracking.adopt(info["run_id"], parent, bench_name)
            timings.append((label, time.perf_counter() - t0))
        return
    t0 = time.perf_counter()
    logs = Path(".dvc") / "tmp" / "genbench" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:
        running = [pool.submit(_temp_experiment, m, s, stamp, logs) for m, s in planned]
        for done in as_completed(running):
            label, code, seconds, log = done.result()
            status = "finished" if code == 0 else f"FAILED (exit {code}; log: {log})"
            click.echo(f"==> {label} {status} in {seconds:.0f} s", err=True)
            if code:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                click.echo("\n".join(f"    {line}" for line in tail), err=True)
    timings.append((f"{len(planned)} experiments, {jobs} at a time", time.perf_counter() - t0))
    for name, seed in planned:
        run_id = _experiment_run_id(f"{name}-s{seed}-{stamp}")
        if run_id is not None and tracking.run_exists(run_id):
            tracking.adopt(run_id, parent, bench_name)


# What a benchmark itself writes in the workspace: `dvc exp apply` may replace these.
BENCHMARK_OUTPUTS = ("metrics.json", "dvc.lock", "params.yaml", "runs/", "reports/", "data/")


def foreign_changes(changed: list[str]) -> list[str]:
    """Uncommitted changes that are not a benchmark's own outputs (the user's work)."""
    return [c for c in changed if not c.startswith(BENCHMARK_OUTPUTS)]


def _apply_params_model(p, planned: list[tuple[str, int]], stamp: str) -> None:
    """Leave the workspace holding the experiment of the model and seed params.yaml names
    (`dvc exp apply`), so its metrics.json, run.json and dvc.lock belong to that model and
    `dvc exp show` pairs it with its own figures (not those of whichever ran last). Skipped
    when other files have uncommitted changes: `dvc exp apply` would overwrite them."""
    exp = f"{p.model}-s{p.seed}-{stamp}"
    if (p.model, p.seed) not in planned:
        click.echo(
            f"note: params.yaml names {p.model} seed {p.seed}, which this benchmark did not "
            "run; metrics.json was left as it was",
            err=True,
        )
        return
    others = foreign_changes(_git("diff", "--name-only", "HEAD").splitlines())
    if others:
        click.echo(
            f"note: not applying {exp} to the workspace, which has uncommitted changes in "
            f"{', '.join(others[:5])}; `dvc exp apply {exp}` does it (and overwrites them)",
            err=True,
        )
        return
    if _dvc("exp", "apply", exp, log=subprocess.DEVNULL).returncode:
        click.echo(f"note: `dvc exp apply {exp}` failed; metrics.json was left as it was", err=True)


def _temp_experiment(name: str, seed: int, stamp: str, logs: Path) -> tuple[str, int, float, Path]:
    """`dvc exp run --temp` of one (model, seed), its output in a log file. DVC's own queue is
    not used: its workers share a file-system message broker that loses a worker to a read
    race (a JSONDecodeError in kombu), after which the rest ran one at a time."""
    label = f"{name}-s{seed}"
    exp = ["exp", "run", "evaluate", "--temp", "-S", f"model={name}", "-S", f"seed={seed}"]
    log = logs / f"{label}.log"
    t0 = time.perf_counter()
    for _attempt in range(2):  # once more if another experiment held DVC's lock
        with log.open("w") as out:
            code = _dvc(*exp, "-n", f"{label}-{stamp}", log=out).returncode
        if code == 0 or "lock" not in log.read_text(errors="replace").lower():
            break
    return label, code, time.perf_counter() - t0, log


def _stage_table(dataset: str, parent: str, names: list[str]) -> list[str]:
    """Seconds per stage process (start-up included), mean over each model's finished runs, and
    their sum over all runs: where the benchmark's time went, beside DVC's share."""
    from pipeline.stages import STAGE_TIMES

    runs = tracking.search(dataset, f"tags.mlflow.parentRunId = '{parent}'")
    cols = [f"metrics.time/{s}" for s in STAGE_TIMES]
    if runs.empty or not set(cols) <= set(runs.columns):
        return []
    head = f"  {'model':<16} {'runs':>4}" + "".join(f" {s:>9}" for s in STAGE_TIMES)
    lines = ["stage processes (s, mean per run; start-up included):", head]
    for name in names:
        rows = runs[runs["tags.model"] == name]
        if not rows.empty:
            means = "".join(f" {rows[c].mean():9.1f}" for c in cols)
            lines.append(f"  {name:<16} {len(rows):>4}{means}")
    sums = "".join(f" {runs[c].sum():9.1f}" for c in cols)
    lines.append(f"  {'sum of all runs':<16} {len(runs):>4}{sums}")
    return lines


def _unfinished(dataset: str, parent: str, planned: list[tuple[str, int]]) -> list[str]:
    """(model, seed) labels of `planned` without a FINISHED child run of benchmark `parent`."""
    runs = tracking.search(dataset, f"tags.mlflow.parentRunId = '{parent}'")
    done = set()
    if not runs.empty:
        done = {(m, str(s)) for m, s in zip(runs["tags.model"], runs["tags.seed"], strict=True)}
    return [f"{m}-s{s}" for m, s in planned if (m, str(s)) not in done]


@main.command("tracking-server", context_settings={"ignore_unknown_options": True})
@click.option(
    "--data",
    default="tracking-server",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder of the server's PostgreSQL cluster and artifacts",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to serve other hosts")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--backend-store-uri",
    default=None,
    help="an existing PostgreSQL (postgresql://USER:PASSWORD@HOST/DB) instead of the bundled one",
)
@click.argument("mlflow_args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def tracking_server(
    data: str, host: str, port: int, backend_store_uri: str | None, mlflow_args: tuple[str, ...]
) -> None:
    """Run a shared MLflow tracking server on PostgreSQL that proxies artifacts, until Ctrl-C.
    Clients set MLFLOW_TRACKING_URI=http://HOST:PORT; arguments after `--` go to `mlflow server`
    (for example `-- --allowed-hosts myhost:5000`)."""
    from pipeline.server import serve

    def ready(url: str) -> None:
        click.echo(f"tracking server ready: export MLFLOW_TRACKING_URI={url}", err=True)

    code = serve(Path(data), host, port, backend_store_uri, mlflow_args, on_ready=ready)
    if code not in (0, -15, -2):  # stopped by Ctrl-C or SIGTERM is a normal end
        raise ServerError(f"mlflow server exited with code {code}")


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
@click.option("--compile/--no-compile", "compile_loss", default=None, help="default: train.compile")
@click.option(
    "--channels-last/--no-channels-last", default=None, help="default: train.channels_last"
)
@user_errors
def throughput(
    params_path: str,
    models: str | None,
    steps: int,
    samples: int,
    batch_size: int | None,
    device: str | None,
    threads: int | None,
    compile_loss: bool | None,
    channels_last: bool | None,
) -> None:
    """Train and sample images per second of each model, in this process, through the code
    `genbench train` and `genbench sample` run (random data of the data set's shape)."""
    from gen.registry import model_class
    from gen.trainer import pick_device
    from pipeline.throughput import measure, probe_meta

    p = load_params(params_path)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    names = names or list(p.benchmark.models)
    for name in names:
        model_class(name)
    try:
        dev = pick_device(device or p.train.device)
    except RuntimeError as exc:
        raise UserError(f"--device={device}: {exc}") from None
    meta = probe_meta(p.data)
    compile_loss = p.train.compile if compile_loss is None else compile_loss
    channels_last = p.train.channels_last if channels_last is None else channels_last
    click.echo(
        f"{'model':<16} {'params':>10} {'train img/s':>12} {'steps/s':>9} {'sample img/s':>13}"
    )
    for name in names:
        section = p.model_section(name)
        bs = batch_size or section.get("batch_size") or model_class(name).Config().batch_size
        got = measure(
            name,
            section,
            meta,
            bs,
            steps,
            samples,
            str(dev),
            threads or p.train.threads,
            compile_loss,
            channels_last,
        )

        def fmt(v: float | None, width: int) -> str:
            return f"{v:>{width}.1f}" if v else f"{'n/a':>{width}}"

        click.echo(
            f"{name:<16} {got['params']:>10,} {fmt(got['train_images_per_s'], 12)} "
            f"{fmt(got['train_steps_per_s'], 9)} {fmt(got['sample_images_per_s'], 13)}"
        )
    click.echo(
        f"device {dev}, {threads or p.train.threads} thread(s), data {dataset_id(p.data)}"
        + (", compiled" if compile_loss else "")
        + (", channels_last" if channels_last else "")
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
