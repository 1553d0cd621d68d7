"""Whether an MLflow store can be used, known in seconds and said in one line, before
anything waits on it: a tracking server's /health answers, a SQLite file is a database, a
database server takes a connection. Each store is checked once per process. This talks to no
MLflow API: `pipeline.tracking` calls it before its first request."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.errors import TrackingError

# A tracking server that is down or silent must fail fast: MLflow's own defaults (120 s per
# request, 7 retries with backoff) leave a stage silent for minutes before a long traceback.
HEALTH_TIMEOUT_S = 10
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
_checked: set[str] = set()  # the stores this process has checked


def check_store(uri: str) -> None:
    """Fail in seconds, with one line naming the URI, when the store cannot be used: a tracking
    server that refuses or never answers, or a SQLite file that is not a database."""
    if uri in _checked:
        return
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite(Path(uri[len("sqlite:///") :]))
    elif uri.split(":", 1)[0].split("+")[0] in DATABASE_PORTS:
        _check_database(uri)
    _checked.add(uri)


def check_writable(uri: str) -> None:
    """A local SQLite store that can be read but not written (a read-only file or folder)
    fails here in one line, before work that would end in a write it refuses. A store locked
    by another writer is not read-only: that one waits its turn."""
    import sqlite3

    path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if path is None or not path.exists():
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.Error as exc:
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise TrackingError(
                f"MLflow store {path} is read-only ({exc}); make it writable, or set "
                "MLFLOW_TRACKING_URI to another store"
            ) from None


# MLflow's own loggers: a store that fails logs tracebacks and retry warnings (88 lines for
# a read-only mlflow.db) before the error reaches genbench, which says it in one line.
STORE_LOGGERS = ("alembic", "sqlalchemy", "mlflow.store")


def quiet_store_logs() -> None:
    """Keep MLflow's store internals off the terminal: their errors are raised, and shown as
    one line. Called after `import mlflow`, whose logging set-up resets its child loggers."""
    for name in STORE_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (a proxy or an older server without /health): it is alive
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TrackingError(
            f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) did not answer within "
            f"{HEALTH_TIMEOUT_S} s ({reason}); start it, or unset MLFLOW_TRACKING_URI to use "
            "the local store mlflow.db"
        ) from None
    from pipeline.auth import check_credentials  # a server with users: is this one of them?

    check_credentials(uri)


def _check_sqlite(path: Path) -> None:
    import sqlite3

    if not path.exists():
        return
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            con.execute("select count(*) from sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(
            f"MLflow store {path} cannot be read ({exc}); move it away to start a new store, "
            "or set MLFLOW_TRACKING_URI to another one"
        ) from None


# A database that MLflow's SQLAlchemy store would retry for about 100 s (10 attempts with
# backoff, not configurable) before a traceback: one connection with a timeout says it first.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
CONNECT_TIMEOUT_S = 5


def _check_database(uri: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:
        scheme = uri.split(":", 1)[0]
        raise TrackingError(f"MLflow store {scheme}://... is not a valid database URI") from None
    shown = url.render_as_string(hide_password=True)  # never print a password
    try:
        if url.get_backend_name() == "postgresql" and _has("psycopg"):
            _connect_postgres(url)  # also says a wrong password or database
        elif url.host:
            import socket

            port = url.port or DATABASE_PORTS[url.get_backend_name()]
            socket.create_connection((url.host, port), timeout=CONNECT_TIMEOUT_S).close()
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TrackingError(
            f"MLflow store {shown} cannot be reached within {CONNECT_TIMEOUT_S} s ({reason}); "
            "start the database or fix the URI"
        ) from None
    if url.drivername == "postgresql" and not _has("psycopg2") and _has("psycopg"):
        raise TrackingError(
            f"MLflow store {shown}: postgresql:// means the psycopg2 driver, which is not "
            "installed; write postgresql+psycopg://... (psycopg 3, installed)"
        )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _connect_postgres(url) -> None:
    import psycopg

    given = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        **dict(url.query),
    }
    settings = {k: v for k, v in given.items() if v is not None}
    psycopg.connect(**settings, connect_timeout=CONNECT_TIMEOUT_S).close()
