"""SIGTERM, SIGINT and SIGHUP (a job scheduler or `timeout`, Ctrl-C, a closed terminal) stop a
genbench command alike: its child processes are stopped with it, `finally` blocks and
`tracking.failing` run as on Ctrl-C (a run is marked KILLED, not left RUNNING), and it exits
with 128 + the signal's number after one line saying what was stopped.

Long children (`dvc repro`, `dvc exp run`) each start in a session of their own, so a signal
reaches them only through this process, which stops each whole process group (SIGINT to DVC,
its own way to stop, SIGTERM to the rest, then SIGKILL after a grace period): DVC, its stage
and whatever the stage started go together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import psutil

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# From the first signal to SIGKILL. A stage marks its run KILLED in well under a second; one
# that takes longer is killed, and the benchmark marks its run instead.
GRACE_S = 5.0


class Interrupted(KeyboardInterrupt):
    """One of SIGNALS arrived. A KeyboardInterrupt, so code written for Ctrl-C (`finally`,
    `tracking.failing`) does the same for all three."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.stopped: list[str] = []  # what was stopped and put back, for the one line

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal killed

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        return f"Stopped by {name}" + (f": {'; '.join(self.stopped)}" if self.stopped else "")


class ProcessGroups:
    """The process groups this process started, each in a session of its own, stopped together
    on a signal. Thread-safe: `--jobs N` starts and waits for them in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # also taken by the signal handler, in the main thread
        self._running: dict[int, tuple[subprocess.Popen, str]] = {}
        self.signum: int | None = None  # set once stopping: nothing new starts
        self.starting = False  # the main thread is starting a child
        self._told: set[int] = set()  # pids told to stop: each is told once

    def run(self, cmd: list[str], label: str, **kwargs: Any) -> int:
        """Run `cmd` (Popen's `kwargs`) in a new session and wait: its exit status. It starts
        with SIGINT blocked and unblocks it once it can stop cleanly (`benchmark.DVC_MAIN`).
        Raises Interrupted if a signal came first; one that comes meanwhile leaves it to `stop`."""
        with self._lock:
            # A signal while the main thread starts a child is raised once the child is
            # registered, so no child can start unseen by `stop`.
            self.starting = threading.current_thread() is threading.main_thread()
            try:
                if self.signum is None:
                    proc = _start(cmd, kwargs)
                    self._running[proc.pid] = (proc, label)
                    if self.signum is not None:
                        _interrupt({proc.pid: (proc, label)}, self._told)
            finally:
                self.starting = False
            if self.signum is not None:
                raise Interrupted(self.signum)
        code = proc.wait()
        with self._lock:
            if self.signum is None:  # else `stop` ends the rest of its group (its stage)
                self._running.pop(proc.pid, None)
        return code

    def interrupt(self, signum: int) -> None:
        """Stop every group gently, at once (from the signal handler); nothing new starts."""
        with self._lock:
            self.signum = signum
            _interrupt(self._running, self._told)

    def stop(self, signum: int, grace: float = GRACE_S) -> list[str]:
        """Every group ended: `interrupt`ed, SIGKILL to what is left after `grace` seconds.
        Returns the labels of the commands that were running."""
        with self._lock:
            self.signum = signum
            running = dict(self._running)
            self._running.clear()
        if not running:
            return []
        deadline = time.monotonic() + grace
        while _interrupt(running, self._told) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pgid in running:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for proc, _ in running.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        return [label for _, label in running.values()]

    def reset(self) -> None:
        with self._lock:
            self.signum = None
            self._told.clear()


def _start(cmd: list[str], kwargs: dict[str, Any]) -> subprocess.Popen:
    """`cmd` in a new session, with SIGINT blocked (the mask of the thread that starts a
    process is the process's, and exec keeps it; a signal sent meanwhile stays pending)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return subprocess.Popen(cmd, start_new_session=True, **kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


CHILDREN = ProcessGroups()  # signals are per process, and so is this registry


def _members(pgids: Iterable[int]) -> list[psutil.Process]:
    """The processes of these groups that still run (zombies, whose parent has not read their
    status yet, do not count)."""
    import psutil  # DVC's own dependency

    found = []
    for proc in psutil.process_iter(["status"]):
        with suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) in pgids:
                found.append(proc)
    return found


def _interrupt(running: dict[int, tuple[subprocess.Popen, str]], told: set[int]) -> bool:
    """Each process of these groups not `told` yet is told to stop; whether any still runs.
    A group's leader, DVC, gets SIGINT, its own way to stop: it waits for its stage, then puts
    the workspace back (HEAD, the git index, its refs), which SIGTERM or SIGKILL leave
    detached. The rest of the group (the stage and what it started) gets SIGTERM: a stage
    marks its run KILLED; one still starting up ends without a word."""
    for proc, _ in running.values():
        proc.poll()  # collects a group leader that has ended
    members = _members(running)
    for member in members:
        if member.pid not in told:
            told.add(member.pid)
            with suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, signal.SIGINT if member.pid in running else signal.SIGTERM)
    return bool(members)


def stop_tree(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """`proc` and every process it started: SIGTERM, then SIGKILL to what is left after
    `grace` seconds. For children that share this process's group (torchrun and its
    workers), which a signal sent to this process alone does not reach."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        tree = []
    for member in tree:
        with suppress(psutil.Error):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for member in alive:
        with suppress(psutil.Error):
            member.kill()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)


def _raise(signum: int, frame: object) -> None:
    """The handler: the children are told to stop now, this process unwinds (a second signal
    while it does is ignored, so clean-up is not cut short: `kill -9` still ends it)."""
    if CHILDREN.signum is not None:
        return
    CHILDREN.interrupt(signum)
    if not CHILDREN.starting:  # else `ProcessGroups.run` raises it
        raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """SIGNALS raise Interrupted in the main thread while inside (elsewhere, a no-op: Python
    takes signal handlers only there). The handlers before are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        CHILDREN.reset()


class StoppableGroup(click.Group):
    """`genbench`'s command group: every command stops on SIGTERM, SIGINT and SIGHUP alike,
    with the processes it started, and exits with 128 + the signal's number after one line."""

    def invoke(self, ctx: click.Context) -> Any:
        with handled():
            try:
                return super().invoke(ctx)
            except Interrupted as stop:
                CHILDREN.stop(stop.signum)  # those the command did not stop itself
                click.echo(stop.line(), err=True)
                raise click.exceptions.Exit(stop.exit_code) from None
