"""A shared MLflow tracking server on PostgreSQL: `genbench tracking-server`.

The server is MLflow's own (`mlflow server --serve-artifacts`): runs and metrics go to
PostgreSQL, artifacts to a folder the server owns, and clients only need its URL. Without
`--backend-store-uri`, a PostgreSQL of the pip package `pgserver` (the `server` extra) is
started in the data folder, so one command gives a working server on a fresh machine.
With `auth` (pipeline.auth), every request needs a user: MLflow's basic authentication.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

from pipeline.auth import ServerAuth, check_admin
from pipeline.errors import ServerError


def local_postgres(folder: Path) -> tuple[str, object]:
    """A PostgreSQL cluster in `folder` (made on first use), running; its URI of database
    `mlflow` and the handle that stops it. As root, pgserver runs it as an unprivileged user."""
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise ServerError(
            "no bundled PostgreSQL: install the server extra (pip install -e '.[server]') or "
            "pass --backend-store-uri postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(folder, cleanup_mode="stop")
    if "1" not in server.psql("SELECT 1 FROM pg_database WHERE datname = 'mlflow';"):
        server.psql("CREATE DATABASE mlflow;")
    return server.get_uri("mlflow"), server


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Until `url`/health answers OK; fails at once if the server process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"mlflow server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise ServerError(f"mlflow server at {url} did not answer /health within {timeout:.0f} s")


def url_host(host: str) -> str:
    """`host` as the host part of a URL that reaches the server: a wildcard address is reached
    on the loopback, and an IPv6 address goes in brackets (http://[::1]:5000)."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(
    data: Path,
    host: str,
    port: int,
    backend_store_uri: str | None,
    extra: tuple[str, ...] = (),
    on_ready=None,
    auth: ServerAuth | None = None,
) -> int:
    """Run PostgreSQL (unless given) and `mlflow server` (with `auth`, its basic-auth app)
    until the server exits or this process gets SIGINT/SIGTERM; then stop both. Returns the
    server's exit code."""
    postgres = None
    if backend_store_uri is None:
        backend_store_uri, postgres = local_postgres(data / "postgres")
    artifacts = data / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts.resolve()),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        *(("--app-name", "basic-auth") if auth is not None else ()),
        *extra,
    ]
    env = {**os.environ, **(auth.environment() if auth is not None else {})}
    # Its own session: `mlflow server` starts workers and job runners that must stop with it.
    process = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, frame) -> None:  # the server first, then the database it writes to
        _signal_group(process, signal.SIGTERM)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = f"http://{url_host(host)}:{port}"
        wait_healthy(url, process, timeout=600)
        if auth is not None:
            check_admin(url, auth)
        if on_ready is not None:
            on_ready(url)
        return process.wait()
    finally:
        _stop_group(process, grace=30)
        for s, handler in old.items():
            signal.signal(s, handler)
        if postgres is not None:
            postgres.cleanup()


def _signal_group(process: subprocess.Popen, signum: int) -> bool:
    """`signum` to the server and every process it started (its session's group); False
    once none of them is left."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the server's group, SIGKILL to what is left of it after `grace` seconds."""
    _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None and not _signal_group(process, 0):
            return
        time.sleep(0.2)
    _signal_group(process, signal.SIGKILL)
    process.wait()
