"""One `genbench benchmark` (or `genbench preset --run`) per repository at a time. Two at
once share the workspace's params.yaml, runs/ and metrics.json (and DVC's lock), so both
failed and one result was mislabelled; the second is now refused with a line naming who holds
the repository.

The lock is `.dvc/tmp/genbench.lock`, held with `flock` for the command's lifetime: the
kernel releases it however the process ends (`kill -9` too), so the lock of a dead process is
simply taken over. The file says who holds it (pid, host, command, start time) and carries a
token the holder's children inherit (`tracking.LOCK_ENV`): the stages of the holder's own
experiments run, a stage started outside it (`genbench train`, a plain `dvc exp run`) is
refused while it holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from pipeline import tracking
from pipeline.user_errors import UserError

LOCK = Path(".dvc") / "tmp" / "genbench.lock"
TRIES = 10  # 0.1 s apart: a stage's check holds the lock shared for an instant


def _read(fd: int) -> dict:
    """The holder the lock file names ({} when empty or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 65536).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not said which yet)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, "
        f"since {holder.get('started')})"
    )


def command_line() -> str:
    """This process's command as typed (`genbench benchmark --jobs 2`)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


@contextmanager
def hold(command: str, root: Path | None = None) -> Iterator[str]:
    """Hold the repository at `root` (default: here) for `command`; yields the token its
    children inherit. Raises UserError naming the holder when another process holds it."""
    root = root or Path.cwd()
    if not (root / ".dvc").is_dir():
        raise UserError(f"not a DVC repository: run `{command}` from the repository root")
    path = root / LOCK
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == TRIES - 1:
                    raise UserError(
                        f"this repository is in use by {describe(_read(fd))}: one benchmark "
                        f"or preset run at a time (lock file {path}); wait for it or stop it"
                    ) from None
                time.sleep(0.1)
        stale = _read(fd)  # a holder that ended without a word (`kill -9`, a power cut)
        if stale:
            click.echo(f"note: taking over the lock of {describe(stale)}, which ended", err=True)
        token = uuid.uuid4().hex
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.environ[tracking.LOCK_ENV] = token
        try:
            yield token
        finally:
            os.environ.pop(tracking.LOCK_ENV, None)
            os.ftruncate(fd, 0)  # an empty file: released in order (the file stays: see above)
    finally:
        os.close(fd)  # releases the lock


def check_free(command: str) -> None:
    """Refuse `command` (a stage) while a benchmark it is not part of holds the repository:
    it would write the same params.yaml, runs/ and metrics.json as the benchmark's."""
    path = tracking.repo_root() / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: no benchmark ever ran here
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return  # nobody holds it
        except BlockingIOError:
            holder = _read(fd)
        if holder.get("token") and holder["token"] == os.environ.get(tracking.LOCK_ENV):
            return  # a stage of the holder's own experiments
        raise UserError(
            f"`{command}` refused: a benchmark holds this repository, {describe(holder)}, and "
            "its experiments use the same params.yaml and runs/; wait for it or stop it"
        )
    finally:
        os.close(fd)
