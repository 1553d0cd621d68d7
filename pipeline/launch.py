"""`genbench train` in several processes: torchrun runs the workers, a failure is one line."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import uuid

from pipeline.signals import stop_tree


class LaunchError(RuntimeError):
    """Training under torchrun failed: the message is one line for the user."""


# Worker lines not passed on: DDP warns once per process when a step happens to use every
# parameter, which `gen.distributed.wrap` expects (the flag is there for the steps that do not).
NOISE = ("find_unused_parameters=True was specified in DDP constructor",)


def _die_with_parent() -> None:
    """Linux: torchrun gets SIGTERM when this process dies however it dies (a kill -9 too),
    so no orphaned workers go on writing checkpoints beside the next attempt."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def torchrun(params_path: str, nproc: int, threads: int, dataset: str) -> None:
    """Run `genbench train` as `nproc` processes under torchrun and wait for them.

    Workers' output passes through as it comes (rank 0's result on stdout, its progress on
    stderr). The first `Error:` line a worker prints is the user's error (every rank raises
    the same one when training diverges); torchrun's own report of the failure that follows
    it is not shown. Raises LaunchError when torchrun exits non-zero. Stopped by a signal, it
    stops the workers and marks KILLED the run they leave RUNNING (a rank that could not mark it
    within the grace period, as on a loaded machine).
    """
    from pipeline import tracking

    # Runs are tagged with the token of the benchmark that holds the repository (which marks
    # them itself when stopped); a training started on its own tags them with a token of its own.
    own = not os.environ.get(tracking.LOCK_ENV)
    token = uuid.uuid4().hex if own else os.environ[tracking.LOCK_ENV]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a local rendezvous on a free port
        "--nproc_per_node",
        str(nproc),
        "-m",
        "pipeline.cli",
        "train",
        "--params",
        params_path,
    ]
    # torchrun would set OMP_NUM_THREADS=1 with a warning; each rank uses train.threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), tracking.LOCK_ENV: token}
    errors: list[str] = []
    with subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_die_with_parent
    ) as proc:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if line.startswith("Error: "):
                    errors.append(line.removeprefix("Error: ").strip())
                elif not errors and not any(n in line for n in NOISE):
                    sys.stderr.write(line)
                    sys.stderr.flush()
        except BaseException:  # a signal or an error here: stop torchrun and its workers
            stop_tree(proc)
            if own:
                tracking.kill_running(dataset, token)
            raise
    if proc.returncode:
        raise LaunchError(
            errors[0]
            if errors
            else f"training in {nproc} processes failed (torchrun exited with "
            f"{proc.returncode}); see the messages above"
        )


CHILD = "GENBENCH_CHILD"  # set in a process `again_with` started: it must not start another


def again_with(args: list[str], env: dict[str, str]) -> str:
    """`genbench ARGS` in a child process whose environment adds `env` (settings torch reads
    only at start-up); returns its stdout once it succeeds. Its stderr passes on, but for its
    `Error:` line, which becomes the LaunchError's message."""
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    env = {**os.environ, **env, CHILD: "1"}
    kw = {"env": env, "capture_output": True, "text": True, "preexec_fn": _die_with_parent}
    done = subprocess.run(cmd, **kw)
    lines = done.stderr.splitlines(keepends=True)
    errors = [line.removeprefix("Error: ").strip() for line in lines if line.startswith("Error: ")]
    sys.stderr.writelines(line for line in lines if not line.startswith("Error: "))
    if done.returncode:
        failed = (
            f"genbench {args[0]} failed (exit status {done.returncode}); see the messages above"
        )
        raise LaunchError(errors[0] if errors else failed)
    return done.stdout.rstrip("\n")
