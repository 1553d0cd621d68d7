"""Whether an MLflow store can be used, known in seconds and said in one line, before
anything waits on it: a tracking server's /health answers, a SQLite file is a database. Each
store is checked once per process. This talks to no MLflow API: `pipeline.tracking` calls it
before its first request."""

from __future__ import annotations

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
    _checked.add(uri)


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
