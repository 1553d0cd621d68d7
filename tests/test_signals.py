"""A benchmark stopped by SIGTERM, SIGINT or SIGHUP stops its experiments, marks its runs
KILLED and puts params.yaml back; a second benchmark in the same repository is refused; a run
whose tags do not say what the experiment trained is never adopted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from conftest import query, run, set_params, tool_env

from pipeline import benchmark, lock, signals, tracking
from pipeline.cli import main
from pipeline.user_errors import UserError

BENCHMARK = ["genbench", "benchmark", "--models", "baseline,vae", "--seeds", "0"]


# ------------------------------------------------------------------------------ signals
def _commands(pid: int) -> list[list[str]]:
    """The command lines of the processes below `pid`."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found.append(child.cmdline())
        except psutil.Error:
            pass
    return found


def _sessions(pid: int) -> set[int]:
    """The sessions of `pid` and every process below it (each experiment has its own)."""
    found = {os.getsid(pid)}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found.add(os.getsid(child.pid))
        except OSError:
            pass
    return found


def _alive(sessions: set[int]) -> list[str]:
    """The processes still running in these sessions (zombies do not run)."""
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) in sessions:
                found.append(" ".join(proc.info["cmdline"] or [])[-80:])
        except (psutil.Error, OSError):
            pass
    return found


def _running_child(repo: Path) -> bool:
    """Whether a stage of an experiment has made its run (a child of a benchmark)."""
    if not (repo / "mlflow.db").exists():
        return False
    sql = (
        "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
        "where r.status = 'RUNNING' and t.key = 'mlflow.parentRunId' and t.value != ''"
    )
    return query(repo, sql)[0][0] > 0


def _stop(
    repo: Path, args: list[str], sig: signal.Signals, ready: Callable[[int], bool]
) -> tuple[int, str]:
    """Start command `args`, send `sig` as soon as `ready(pid)`, and check that within 10 s no
    process it started is left. Returns its exit status and its output."""
    proc = subprocess.Popen(
        args,
        cwd=repo,
        env=tool_env(),
        text=True,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sessions: set[int] = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        sessions |= _sessions(proc.pid)
        if ready(proc.pid):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "it ended before it could be stopped"
    sessions |= _sessions(proc.pid)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    left = _alive(sessions)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _alive(sessions)
    assert not left, f"still running 10 s after it ended: {left}"
    return proc.returncode, out + err


def _git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo, check=False).stdout


@pytest.mark.slow
def test_sigterm_sigint_and_sighup_stop_a_benchmark_and_leave_nothing_running(reproduced: Path):
    repo = reproduced  # `dvc repro reference` is cached: experiments start within seconds
    params = (repo / "params.yaml").read_bytes()
    head, index = _git(repo, "symbolic-ref", "HEAD"), _git(repo, "diff", "--cached", "--stat")

    def experiment(pid: int) -> bool:
        return any("exp" in c and "run" in c for c in _commands(pid))

    def reference(pid: int) -> bool:
        return any("repro" in c for c in _commands(pid))

    cases = [
        # --jobs 2, once a stage of an experiment has made its MLflow run
        (signal.SIGTERM, ["--jobs", "2"], lambda pid: _running_child(repo), "baseline-s0"),
        # --jobs 1: DVC's workspace experiment, which edits params.yaml and detaches HEAD
        (signal.SIGINT, ["--jobs", "1"], experiment, "baseline-s0"),
        # the first `dvc repro reference`, before the benchmark's run exists
        (signal.SIGHUP, ["--jobs", "1"], reference, "dvc repro reference"),
    ]
    for sig, jobs, ready, stopped in cases:
        code, output = _stop(repo, [*BENCHMARK, *jobs], sig, ready)
        assert code == 128 + sig, output
        lines = [ln for ln in output.splitlines() if ln.startswith("Stopped by")]
        assert len(lines) == 1 and lines[0] == output.splitlines()[-1], output
        assert lines[0].startswith(f"Stopped by {sig.name}: stopped ") and stopped in lines[0]
        assert "Traceback" not in output, output
        assert query(repo, "select count(*) from runs where status = 'RUNNING'") == [(0,)]
        assert (repo / "params.yaml").read_bytes() == params, sig.name
        assert _git(repo, "symbolic-ref", "HEAD") == head  # DVC re-attached it
        assert _git(repo, "diff", "--cached", "--stat") == index
    # Every benchmark that got as far as its run was marked KILLED, with its child runs.
    sql = "select status from runs r join tags t on t.run_uuid = r.run_uuid where t.key = ?"
    assert query(repo, sql, tracking.BENCHMARK_TAG) == [("KILLED",), ("KILLED",)]
    children = sql + " and t.value != '' and r.status = 'KILLED'"
    assert query(repo, children, "mlflow.parentRunId")  # the stage's run that was RUNNING


@pytest.mark.slow
def test_sigterm_to_genbench_train_with_nproc_2_stops_torchrun_and_kills_the_run(prepared: Path):
    set_params(prepared, model="vae", vae={"steps": 100000}, train={"checkpoint_every": 50})

    def training(pid: int) -> bool:
        return query(prepared, "select count(*) from runs where name = 'vae-s0'")[0][0] > 0

    code, output = _stop(prepared, ["genbench", "train", "--nproc", "2"], signal.SIGTERM, training)
    assert code == 128 + signal.SIGTERM and output.strip() == "Stopped by SIGTERM", output
    assert query(prepared, "select status from runs where name = 'vae-s0'") == [("KILLED",)]


def test_a_process_group_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    groups = signals.ProcessGroups()
    script = "trap '' TERM INT; sleep 60 & sleep 60; wait"
    started = []

    def start() -> None:
        started.append(groups.run(["sh", "-c", script], "stubborn"))

    import threading

    worker = threading.Thread(target=start)
    worker.start()
    deadline = time.monotonic() + 10
    while not groups._running and time.monotonic() < deadline:
        time.sleep(0.01)
    [pgid] = list(groups._running)
    time.sleep(0.3)  # the shell has started its two sleeps
    t0 = time.monotonic()
    assert groups.stop(signal.SIGTERM, grace=1.0) == ["stubborn"]
    assert 1.0 <= time.monotonic() - t0 < 5
    worker.join(5)
    assert started == [-signal.SIGKILL]
    assert not signals._members([pgid])
    with pytest.raises(signals.Interrupted):  # stopping: nothing new starts
        groups.run(["true"], "late")


def test_stop_tree_ends_a_child_and_the_processes_it_started():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    time.sleep(0.3)
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    assert len(tree) == 3
    signals.stop_tree(proc, grace=2.0)
    assert not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


# ------------------------------------------------------------------------ the repository
def _lock_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.exit_code == 2 and "Traceback" not in result.output
    return lines[0]


def test_a_second_benchmark_is_refused_naming_the_holder(project: Path, monkeypatch):
    monkeypatch.chdir(project)
    params = (project / "params.yaml").read_bytes()
    with lock.hold("genbench benchmark --jobs 2", project):
        os.environ.pop(tracking.LOCK_ENV)  # as in another process: not the holder's child
        line = _lock_line(CliRunner().invoke(main, ["benchmark", "--models", "vae"]))
        assert f"pid {os.getpid()}" in line and "`genbench benchmark --jobs 2`" in line
        assert os.uname().nodename in line and "since 20" in line
        # A stage outside the benchmark is refused too: it would share params.yaml, runs/.
        line = _lock_line(CliRunner().invoke(main, ["train"]))
        assert "`genbench train` refused" in line and f"pid {os.getpid()}" in line
        with pytest.raises(UserError):
            lock.check_free("genbench sample")
        # `genbench preset --run` runs a workspace experiment too: it waits its turn.
        result = CliRunner().invoke(main, ["preset", "pixelcnn-cifar10", "--run"])
        assert result.exit_code == 2 and "in use by pid" in result.output.splitlines()[-1]
    assert (project / "params.yaml").read_bytes() == params
    assert not (project / "mlflow.db").exists()
    assert (project / lock.LOCK).read_bytes() == b""  # released in order
    lock.check_free("genbench train")  # free again


def test_the_stages_of_the_holders_own_experiments_run(project: Path, monkeypatch):
    monkeypatch.chdir(project)
    with lock.hold("genbench benchmark", project) as token:
        assert os.environ[tracking.LOCK_ENV] == token  # what its experiments inherit
        lock.check_free("genbench train")  # no error
        # ... also from DVC's temporary copy of the repository
        copy = project / ".dvc" / "tmp" / "exps" / "tmpabc"
        copy.mkdir(parents=True)
        monkeypatch.chdir(copy)
        lock.check_free("genbench train")
    assert tracking.LOCK_ENV not in os.environ


def test_the_lock_of_a_process_that_died_is_taken_over(project: Path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"pid": dead.pid, "host": "h", "command": "genbench benchmark", "started": "then"}
    path = project / lock.LOCK
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({**holder, "token": "x"}))  # what `kill -9` leaves
    with lock.hold("genbench benchmark --seeds 0", project):
        now = json.loads(path.read_text())
        assert now["pid"] == os.getpid() and now["command"] == "genbench benchmark --seeds 0"
    assert f"taking over the lock of pid {dead.pid} on h" in capsys.readouterr().err


def test_an_experiment_whose_run_says_another_model_is_not_adopted(prepared: Path, capsys):
    """The run id comes from the experiment's own commit; a run whose tags or run.json do not
    say the planned model and seed stays out of the benchmark (and so, out of the report)."""
    parent = tracking.start_benchmark("digits", "b1", {})
    baseline = tracking.start_run("digits", "baseline", "baseline", {}, 0)
    pixelcnn = tracking.start_run("digits", "pixelcnn", "autoregressive", {}, 0)

    def experiment(name: str, info: dict) -> None:
        """An experiment commit holding `info` as its runs/run.json, as DVC makes one."""
        (prepared / "runs" / "run.json").write_text(json.dumps(info))
        run(["git", "add", "-f", "runs/run.json"], prepared)
        run(["git", "commit", "-qm", name], prepared)
        run(["git", "update-ref", f"refs/exps/ab/cdef/{name}", "HEAD"], prepared)

    experiment("pixelcnn-s0-x", {"run_id": baseline, "model": "baseline", "seed": 0})
    experiment("pixelcnn-s1-x", {"run_id": pixelcnn, "model": "pixelcnn", "seed": 1})
    experiment("baseline-s0-x", {"run_id": pixelcnn, "model": "baseline", "seed": 0})
    experiment("pixelcnn-s0-y", {"run_id": pixelcnn, "model": "pixelcnn", "seed": 0})
    for name, seed, exp in [
        ("pixelcnn", 0, "pixelcnn-s0-x"),  # it trained the baseline
        ("pixelcnn", 1, "pixelcnn-s1-x"),  # the run is seed 0's
        ("baseline", 0, "baseline-s0-x"),  # run.json says baseline, the run is pixelcnn's
    ]:
        benchmark._adopt(name, seed, exp, parent, "b1")
        assert "not adopting run" in capsys.readouterr().err
    for run_id in (baseline, pixelcnn):
        assert "mlflow.parentRunId" not in tracking.run_tags(run_id)
    benchmark._adopt("pixelcnn", 0, "pixelcnn-s0-y", parent, "b1")
    assert tracking.run_tags(pixelcnn)["mlflow.parentRunId"] == parent
    assert capsys.readouterr().err == ""
