"""`genbench benchmark`: one DVC experiment per (model, seed) as child runs of one MLflow
benchmark run, the `data` row, then the report; with the timings of where the time went."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO

import click
import yaml

from gen.data import dataset_id
from gen.registry import model_class
from pipeline import signals, stages, store_check, tracking
from pipeline.errors import ReportError
from pipeline.params import Params
from pipeline.report import build_report
from pipeline.selection import check_plan, select
from pipeline.throughput import step_seconds
from pipeline.user_errors import UserError

BENCHMARK_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")  # safe in MLflow filters and file names
# What a benchmark itself writes in the workspace: `dvc exp apply` may replace these.
BENCHMARK_OUTPUTS = ("metrics.json", "dvc.lock", "params.yaml", "runs/", "reports/", "data/")

Timings = list[tuple[str, float]]  # (what, seconds), in the order they ran
REPRO = "dvc repro reference"


def run(
    p: Params,
    params_path: str,
    names: list[str] | None,
    seeds: list[int] | None,
    jobs: int | None,
    name: str | None,
    dry_run: bool = False,
    **_: object,  # --suite: already in `p`
) -> None:
    """Benchmark `names` x `seeds` under the name `name` (default: benchmark-<time>), `jobs`
    experiments at once (a None is the params' benchmark.*); `params_path` is left as it was.
    Raises if any experiment did not finish, after the report of those that did. With a
    recipe (`p.suite`) params.yaml holds its values while the benchmark runs. `dry_run`: say
    what would run, and what is left out, and stop before anything is touched."""
    selection = select(p, names)
    names = selection.models
    seeds = seeds or list(p.benchmark.seeds)
    jobs = jobs or p.benchmark.jobs
    if name is not None and not BENCHMARK_NAME.fullmatch(name):
        raise UserError(
            f"--name={name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-'"
        )
    check_plan(p, names, seeds)
    for line in selection.lines():
        click.echo(f"==> left out (the data cannot serve them): {line}", err=True)
    if dry_run:
        click.echo(selection.plan(seeds, jobs))
        return
    _preflight(p)
    path = Path(params_path)
    original = path.read_bytes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = name or f"benchmark-{stamp}"
    dataset = dataset_id(p.data)
    timings: Timings = []
    planned = [(m, s) for s in seeds for m in names]
    t_all = time.perf_counter()
    try:
        if p.suite is not None:  # every stage and experiment reads the recipe's values
            path.write_text(yaml.safe_dump(p.raw, sort_keys=False))
        fp = _ruler_and_data_row(p, dataset, timings)
        settings = {"models": ",".join(names), "seeds": ",".join(map(str, seeds))}
        settings.update(selection.settings(p.suite))
        parent = tracking.start_benchmark(dataset, name, settings)
        os.environ[tracking.PARENT_ENV] = parent
        with tracking.failing(parent, "benchmark"):
            tracking.set_tags(parent, fp)
            if jobs > 1:
                t0 = time.perf_counter()
                planned = _longest_first(p, planned)
                timings.append(("cost probe (order of experiments)", time.perf_counter() - t0))
            _run_experiments(planned, stamp, jobs, parent, name, timings)
            _apply_params_model(p, planned, stamp)
            failed = _unfinished(dataset, parent, planned)
            tracking.finish(parent, "FAILED" if failed else "FINISHED")
    except signals.Interrupted as stop:
        stop.stopped = _stopped(stop.signum, dataset, path, original)
        raise
    finally:
        os.environ.pop(tracking.PARENT_ENV, None)
        _put_back(path, original)  # `dvc exp run -S` edits params.yaml in the workspace
    written = _report(dataset, names, name, bool(failed), timings)
    timings.append(("total", time.perf_counter() - t_all))
    _log_timings(dataset, parent, names, timings)
    if written is not None:
        click.echo(f"wrote {written[0]} and {written[1]}")
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(planned)} experiments did not finish: {', '.join(failed)} "
            "(see the output above; the report lists them as failed)"
        )


def _stopped(signum: int, dataset: str, path: Path, original: bytes) -> list[str]:
    """After a signal: the experiments' process groups ended, every run this benchmark (or a
    stage of its experiments) left RUNNING marked KILLED, params.yaml put back; what was done,
    for the one line the command ends with."""
    done = []
    stopped = signals.CHILDREN.stop(signum)
    if stopped:
        done.append(f"stopped {', '.join(stopped)}")
    try:  # the runs are tagged with the lock's token (`genbench benchmark` holds the lock)
        killed = tracking.kill_running(dataset, os.environ.get(tracking.LOCK_ENV, "-"))
        done.append(f"{killed} run{'' if killed == 1 else 's'} KILLED, none left RUNNING")
    except Exception as exc:  # the store may be why it was stopped: say so, go on
        done.append(f"runs not marked KILLED ({' '.join(str(exc).split())[:200]})")
    if _put_back(path, original):
        done.append(f"{path} put back as it was")
    return done


def _put_back(path: Path, original: bytes) -> bool:
    """`path` holding `original` again, byte for byte (written whole, then renamed into
    place, so a kill cannot leave half of it); whether it had changed."""
    if path.read_bytes() == original:
        return False
    tmp = path.with_name(path.name + ".genbench-tmp")
    tmp.write_bytes(original)
    shutil.copymode(path, tmp)
    tmp.replace(path)
    return True


def _preflight(p: Params) -> None:
    """The rest of what is visible before the first experiment (after `check_plan`): the
    repository and the tracking store. A benchmark that cannot finish must not start."""
    if not Path(".dvc").is_dir():
        raise UserError("not a DVC repository: run `genbench benchmark` from the repository root")
    if not (_git("config", "user.name") and _git("config", "user.email")):
        raise UserError(
            "DVC experiments commit to git, which has no identity here: set "
            "`git config user.name ...` and `git config user.email ...` first"
        )
    store_check.check_store(tracking.tracking_uri())
    store_check.check_writable(tracking.tracking_uri())
    stages.eval_protocol(p)  # the feature extractor's weights file, if it needs one


def _ruler_and_data_row(p: Params, dataset: str, timings: Timings) -> dict[str, str]:
    """The ruler and the data row first, in the workspace: every experiment then takes prepare
    and classifier from DVC's cache. This also makes the store, so parallel workers never race
    to create it. Returns the protocol fingerprint."""
    t0 = time.perf_counter()
    click.echo("==> dvc repro reference (data, classifier, data row)", err=True)
    if dvc("repro", "reference", label=REPRO).returncode:
        raise click.ClickException("preparing the data, classifier or data row failed")
    fp = stages.fingerprint(p)
    if not _data_row(dataset, fp["protocol"]):  # the stage was cached but the run is gone
        if dvc("repro", "--force", "--single-item", "reference", label=REPRO).returncode:
            raise click.ClickException("scoring the data row failed")
    timings.append(("data + classifier + data row", time.perf_counter() - t0))
    return fp


def _data_row(dataset: str, protocol: str) -> bool:
    """Whether the store has a finished `data` row for this protocol."""
    runs = tracking.search(dataset, f"tags.model = 'data' and tags.protocol = '{protocol}'")
    return not runs.empty


def _longest_first(p: Params, planned: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The order of parallel runs: longest first (a few measured training steps x steps), so
    no long experiment starts last and runs alone while the other workers are idle."""
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
    timings: Timings,
) -> None:
    """The DVC experiments, one after another in the workspace, or `jobs` at a time each in a
    temporary copy (`dvc exp run --temp`); each one's MLflow run becomes a child of `parent`
    (also a run DVC found unchanged and did not rerun)."""
    if jobs == 1:
        for name, seed in planned:
            label = f"{name}-s{seed}"
            click.echo(f"==> dvc exp run evaluate -S model={name} -S seed={seed}", err=True)
            t0 = time.perf_counter()
            exp = ["exp", "run", "evaluate", "-S", f"model={name}", "-S", f"seed={seed}"]
            if dvc(*exp, "-n", f"{label}-{stamp}", label=label).returncode == 0:
                _adopt(name, seed, f"{label}-{stamp}", parent, bench_name)
            timings.append((label, time.perf_counter() - t0))
        return
    t0 = time.perf_counter()
    logs = Path(".dvc") / "tmp" / "genbench" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    # Not `with`: on a signal it would wait for the workers, which wait for their experiments.
    pool = ThreadPoolExecutor(jobs)
    try:
        running = [pool.submit(_temp_experiment, m, s, stamp, logs) for m, s in planned]
        for done in as_completed(running):
            label, code, seconds, log = done.result()
            status = "finished" if code == 0 else f"FAILED (exit {code}; log: {log})"
            click.echo(f"==> {label} {status} in {seconds:.0f} s", err=True)
            if code:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                click.echo("\n".join(f"    {line}" for line in tail), err=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    timings.append((f"{len(planned)} experiments, {jobs} at a time", time.perf_counter() - t0))
    for name, seed in planned:
        _adopt(name, seed, f"{name}-s{seed}-{stamp}", parent, bench_name)


def _adopt(name: str, seed: int, exp_name: str, parent: str, bench_name: str) -> None:
    """Make the run experiment `exp_name` trained a child of benchmark `parent`. The run id
    comes from the experiment's own commit (never from the workspace's runs/run.json, which
    another process may have written since), and a run whose tags do not say the planned
    model and seed is refused: a mislabelled result must not enter the report."""
    found = _experiment_run(exp_name)
    if found is None or not tracking.run_exists(found[0]):
        return
    run_id, info = found
    tags = tracking.run_tags(run_id)
    trained = (info.get("model"), str(info.get("seed")))
    tagged = (tags.get("model"), tags.get("seed"))
    if trained != (name, str(seed)) or tagged != (name, str(seed)):
        click.echo(
            f"note: not adopting run {run_id} of experiment {exp_name}: it trained "
            f"{trained[0]} seed {trained[1]} and is tagged model={tagged[0]} seed={tagged[1]}, "
            f"but {name} seed {seed} was planned",
            err=True,
        )
        return
    tracking.adopt(run_id, parent, bench_name)


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
            code = dvc(*exp, "-n", f"{label}-{stamp}", log=out, label=label).returncode
        if code == 0 or "lock" not in log.read_text(errors="replace").lower():
            break
    return label, code, time.perf_counter() - t0, log


def _experiment_run(exp_name: str) -> tuple[str, dict] | None:
    """The MLflow run experiment `exp_name` trained into and the rest of its run.json (model,
    seed), as committed to the experiment's ref; None when there is none."""
    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps").splitlines()
    ref = next((r for r in refs if r.endswith("/" + exp_name)), None)
    text = _git("show", f"{ref}:{stages.RUN_INFO.as_posix()}") if ref else ""
    try:
        info = json.loads(text) if text else {}
        return (info["run_id"], info) if info else None
    except (ValueError, KeyError, TypeError):
        return None


def _apply_params_model(p: Params, planned: list[tuple[str, int]], stamp: str) -> None:
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
    if dvc("exp", "apply", exp, log=subprocess.DEVNULL).returncode:
        click.echo(f"note: `dvc exp apply {exp}` failed; metrics.json was left as it was", err=True)


def foreign_changes(changed: list[str]) -> list[str]:
    """Uncommitted changes that are not a benchmark's own outputs (the user's work)."""
    return [c for c in changed if not c.startswith(BENCHMARK_OUTPUTS)]


def _unfinished(dataset: str, parent: str, planned: list[tuple[str, int]]) -> list[str]:
    """(model, seed) labels of `planned` without a FINISHED child run of benchmark `parent`."""
    runs = tracking.search(dataset, f"tags.mlflow.parentRunId = '{parent}'")
    done = set()
    if not runs.empty:
        done = {(m, str(s)) for m, s in zip(runs["tags.model"], runs["tags.seed"], strict=True)}
    return [f"{m}-s{s}" for m, s in planned if (m, str(s)) not in done]


def _report(
    dataset: str, names: list[str], name: str, failed: bool, timings: Timings
) -> tuple[Path, Path] | None:
    """The report of every part of benchmark `name` finished so far: its Markdown and HTML
    files, or None if it could not be made after failed experiments (their error comes next)."""
    t0 = time.perf_counter()
    try:
        written = build_report(dataset, Path("reports"), names, name)
    except ReportError as exc:
        if not failed:
            raise
        written = None
        click.echo(f"no report: {exc}", err=True)
    timings.append(("report", time.perf_counter() - t0))
    return written


def _log_timings(dataset: str, parent: str, names: list[str], timings: Timings) -> None:
    """The timings and the stage table on stderr and as the benchmark run's timings.txt."""
    lines = ["timings (s):", *(f"  {label:<36} {sec:8.1f}" for label, sec in timings)]
    lines += _stage_table(dataset, parent, names)
    click.echo("\n".join(lines), err=True)
    tracking.log_text(parent, "\n".join(lines) + "\n", "timings.txt")


def _stage_table(dataset: str, parent: str, names: list[str]) -> list[str]:
    """Seconds per stage process (start-up included), mean over each model's finished runs, and
    their sum over all runs: where the benchmark's time went, beside DVC's share."""
    runs = tracking.search(dataset, f"tags.mlflow.parentRunId = '{parent}'")
    cols = [f"metrics.time/{s}" for s in stages.STAGE_TIMES]
    if runs.empty or not set(cols) <= set(runs.columns):
        return []
    head = f"  {'model':<16} {'runs':>4}" + "".join(f" {s:>9}" for s in stages.STAGE_TIMES)
    lines = ["stage processes (s, mean per run; start-up included):", head]
    for name in names:
        rows = runs[runs["tags.model"] == name]
        if not rows.empty:
            means = "".join(f" {rows[c].mean():9.1f}" for c in cols)
            lines.append(f"  {name:<16} {len(rows):>4}{means}")
    sums = "".join(f" {runs[c].sum():9.1f}" for c in cols)
    lines.append(f"  {'sum of all runs':<16} {len(runs):>4}{sums}")
    return lines


def _tool_env() -> dict[str, str]:
    """PATH with this interpreter's bin folder first, so DVC stages find `genbench` and `dvc`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


# `dvc ARGS` as `python -m dvc` runs it, but for SIGINT, which the child starts with blocked
# (`signals.ProcessGroups.run`). SIGINT is how genbench stops DVC, DVC's own way to stop (it
# lets its stage end, then puts the workspace back: HEAD, the git index, its refs). One that
# came while DVC was still importing, with nothing to put back, ends it quietly here instead
# of with a traceback from inside an import.
DVC_MAIN = """import signal, sys
from dvc.cli import main
if signal.SIGINT in signal.sigpending():
    sys.exit(128 + signal.SIGINT)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
sys.exit(main(sys.argv[1:]))
"""


def dvc(*args: str, log: IO | int | None = None, label: str = "") -> subprocess.CompletedProcess:
    """`dvc ARGS` with this environment's tools, in a process group of its own that a signal
    to this process stops (`pipeline.signals`); its output to `log` when given."""
    out = {"stdout": log, "stderr": subprocess.STDOUT} if log is not None else {}
    cmd = [sys.executable, "-c", DVC_MAIN, *args]
    label = label or f"dvc {' '.join(args[:2])}"
    code = signals.CHILDREN.run(cmd, label, env=_tool_env(), **out)
    return subprocess.CompletedProcess(cmd, code)


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""
