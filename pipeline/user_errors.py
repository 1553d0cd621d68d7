"""The errors a user can fix, and the decorator that shows each as one `Error:` line and exit
status 2 (the error classes themselves are in `pipeline.errors`, cheap to import)."""

from __future__ import annotations

import errno
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import click

from gen.captions import CaptionError
from gen.checkpoint import CheckpointError
from gen.config import ConfigError
from gen.data import DataError
from gen.domains import DomainError
from gen.metrics import MetricError
from gen.outside_samples import SampleError
from gen.protocol_file import ProtocolError
from gen.user_files import UserFileError
from pipeline import tracking
from pipeline.errors import ReportError, ServerError, TrackingError

USER_ERRORS = (
    ConfigError,
    DataError,
    CaptionError,
    DomainError,
    CheckpointError,
    MetricError,
    ProtocolError,
    SampleError,
    UserFileError,
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


# Writes the disk refuses (full, over quota, read-only, too large, failing): what to do next.
WRITE_ERRORS = {
    errno.ENOSPC: "free some space and run the command again",
    errno.EDQUOT: "free some space (disk quota) and run the command again",
    errno.EROFS: "the file system is read-only; run it where it can write",
    errno.EFBIG: "the file is too large for this file system",
    errno.EIO: "the disk reported an input/output error",
}


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


def _store_problem(exc: BaseException) -> str:
    """A store error's one line without SQLAlchemy's statement, parameters and advice: the
    problem ("attempt to write a readonly database") is what the user can act on."""
    text = re.sub(r"\(raised as a result of .*?\)\s*", "", _one_line(exc))
    text = re.sub(r"\s*\(Background on this error at: \S+\)", "", text)
    return text.split(" [SQL: ")[0]


def user_errors(fn):
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise UserError(_one_line(exc) + _params_hint()) from None
        except OSError as exc:
            if exc.errno not in WRITE_ERRORS:
                raise
            where = f"cannot write {exc.filename}: " if exc.filename else ""
            raise UserError(f"{where}{exc.strerror}; {WRITE_ERRORS[exc.errno]}") from None
        except Exception as exc:
            if _is_store_error(exc):
                uri = tracking.tracking_uri()
                raise UserError(f"MLflow store {uri}: {_store_problem(exc)}"[:2000]) from None
            raise

    return wrapper
