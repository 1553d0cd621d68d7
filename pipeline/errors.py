"""Errors the CLI shows as one line; here so that importing them costs nothing at start-up."""


class ReportError(RuntimeError):
    """Nothing to report from (no such benchmark, no finished runs), or a report not written."""


class ServerError(RuntimeError):
    """The tracking server (or its PostgreSQL) could not be started or did not answer."""


class TrackingError(RuntimeError):
    """The MLflow store cannot be used: a dead server, a corrupt database (one line)."""
