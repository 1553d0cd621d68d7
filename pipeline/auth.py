"""Who may use the shared tracking server: MLflow's basic authentication (`mlflow server
--app-name basic-auth`), on whenever the server binds beyond loopback.

Anyone who reaches an open server can read, edit and delete every run, and can log a "model"
that other hosts then unpickle. So the server checks a user name and password on every
request (clients set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) and a user that
the admin adds is read-only (`default_permission = READ`) until given EDIT on an experiment.
Passwords come from the environment or a file, never from the command line, where `ps` and the
shell's history would show them.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import json
import os
import secrets
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ServerError, TrackingError

ADMIN = "admin"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own name for it
USER_PASSWORD_ENV = "GENBENCH_USER_PASSWORD"
MIN_PASSWORD = 12  # MLflow's rule: it refuses shorter passwords
DEFAULT_PERMISSION = "READ"  # a new user reads every experiment and writes none (but its own)
# MLflow checks a password by a deliberately slow hash (scrypt): uncached, every request a
# benchmark makes would pay it. A success is remembered this long per server worker, so a
# changed password or a deleted user takes up to this long to be refused everywhere.
CACHE_S = 60


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or 0.0.0.0-like wildcard: other machines may reach it
        return False


def read_password(file: str | None, option: str, env: str, what: str) -> str:
    """The password in `file` (its first line, given by `option`), else in the environment
    variable `env`; a missing or short one is a ServerError that says where to put it."""
    if file is not None:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ServerError(f"{option} {file}: {reason}") from None
        password, source = (lines[0].strip() if lines else ""), f"file {file}"
    else:
        password, source = os.environ.get(env, ""), env
    if not password:
        raise ServerError(f"no password for {what}: set {env}, or give {option} FILE")
    if len(password) < MIN_PASSWORD:
        raise ServerError(
            f"the password for {what} in {source} has {len(password)} characters; MLflow needs "
            f"at least {MIN_PASSWORD}"
        )
    return password


@dataclass(frozen=True)
class ServerAuth:
    """What `mlflow server --app-name basic-auth` needs: its config file and environment."""

    folder: Path
    admin_password: str

    @property
    def users_db(self) -> Path:
        return self.folder / "users.db"

    def environment(self) -> dict[str, str]:
        """The variables of the server's process; the password is never in a file or argv."""
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self._config()),
            ADMIN_PASSWORD_ENV: self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret_key(),
        }

    def _config(self) -> Path:
        path = self.folder / "basic_auth.ini"
        path.write_text(
            "[mlflow]\n"
            f"default_permission = {DEFAULT_PERMISSION}\n"
            f"database_uri = sqlite:///{self.users_db.resolve()}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {CACHE_S}\n"
        )
        return path

    def _secret_key(self) -> str:
        """The key of the login form's CSRF tokens: one per server folder, kept across
        restarts and shared by the server's workers."""
        path = self.folder / "secret-key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def server_auth(data: Path, password_file: str | None) -> ServerAuth:
    """The admin's password checked and the folder `data`/auth made (for the server's user only),
    before anything starts."""
    if importlib.util.find_spec("flask_wtf") is None:
        raise ServerError(
            "authentication needs MLflow's auth extra: pip install -e '.[server]' "
            "(or pip install 'mlflow[auth]')"
        )
    password = read_password(
        password_file, "--admin-password-file", ADMIN_PASSWORD_ENV, f"user '{ADMIN}'"
    )
    folder = data / "auth"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return ServerAuth(folder, password)


def _get(url: str, user: str | None, password: str | None) -> int:
    """The HTTP status of GET `url`, with basic credentials when given."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check_admin(url: str, auth: ServerAuth) -> None:
    """MLflow sets the admin's password when it creates the user store and ignores it later:
    a different one now would lock the admin out without a word. Say so instead."""
    status = _get(f"{url}/api/2.0/mlflow/users/get?username={ADMIN}", ADMIN, auth.admin_password)
    if status == 401:
        raise ServerError(
            f"the admin password given is not the one {auth.users_db} was created with (MLflow "
            "keeps the first); give that one, or move the file away to start a new user store"
        )
    if status != 200:
        raise ServerError(f"the tracking server at {url} answered {status} to the admin's login")


def check_credentials(uri: str) -> None:
    """For a client: a server that wants a user, and refuses this one, is said in one line
    before any work starts (an open server, or a good user, passes)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is None and os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return  # a bearer token, for a server behind another kind of login
    try:
        status = _get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1", user, password
        )
    except OSError:
        return  # not a login problem: MLflow's own requests will say what it is
    if status != 401:
        return
    if user is None:
        raise TrackingError(
            f"MLflow tracking server {uri} needs a user: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (its admin adds users with `genbench tracking-server "
            "add-user`)"
        )
    raise TrackingError(
        f"MLflow tracking server {uri} refused user '{user}' (MLFLOW_TRACKING_USERNAME): no "
        "such user, or not the password in MLFLOW_TRACKING_PASSWORD"
    )


def add_user(url: str, name: str, password: str, write: str | None) -> str:
    """Create user `name` as the admin in MLFLOW_TRACKING_USERNAME / _PASSWORD; with `write`,
    give it EDIT (create and log runs, not delete them) on that experiment, made if missing.
    Returns what the user may do, in words."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # starlette's deprecation of what mlflow.server imports
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient

    from pipeline.tracking import EXPERIMENT_TAGS

    check_credentials(url)
    try:
        users = AuthServiceClient(url)
        users.create_user(name, password)
        if write is None:
            return f"user '{name}' reads every experiment and writes to none but its own"
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(write)
        if experiment is None:  # made as `genbench` makes it (pipeline.tracking)
            eid = client.create_experiment(write, tags=EXPERIMENT_TAGS)
        else:
            eid = experiment.experiment_id
        users.grant_user_permission(name, "experiment", eid, "EDIT")
    except MlflowException as exc:
        admin = " (users are added by the admin: MLFLOW_TRACKING_USERNAME=admin)"
        refused = exc.get_http_status_code() == 403
        raise ServerError(f"{url}: {_reason(exc)}{admin if refused else ''}") from None
    return f"user '{name}' creates and logs runs in experiment '{write}' and reads the others"


def _reason(exc: Exception) -> str:
    """MLflow's REST error without the request it came from."""
    text = " ".join(str(exc).split())
    body = text.split("Response body: ", 1)[-1].strip("'")
    try:
        return json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        return body
