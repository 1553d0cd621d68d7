"""`genbench tracking-server` (serve; pipeline.server) and `genbench tracking-server add-user`
(pipeline.auth): parsing only."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.errors import ServerError
from pipeline.user_errors import user_errors


class ServeByDefault(click.Group):
    """`genbench tracking-server [OPTIONS]` serves, as it did before it had sub-commands;
    `genbench tracking-server add-user ...` runs that one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group("tracking-server", cls=ServeByDefault)
def tracking_server() -> None:
    """A shared MLflow tracking server, and its users."""


@tracking_server.command("serve", context_settings={"ignore_unknown_options": True})
@click.option(
    "--data",
    default="tracking-server",
    show_default=True,
    type=click.Path(file_okay=False),
    help="folder of the server's PostgreSQL cluster, artifacts and users",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="0.0.0.0 to serve other hosts (then with authentication)",
)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--backend-store-uri",
    default=None,
    help="an existing PostgreSQL (postgresql://USER:PASSWORD@HOST/DB) instead of the bundled one",
)
@click.option(
    "--auth",
    is_flag=True,
    help="ask every client for a user and password also on loopback (always on beyond it)",
)
@click.option(
    "--admin-password-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="file whose first line is the password of the user 'admin' "
    "(default: $MLFLOW_AUTH_ADMIN_PASSWORD)",
)
@click.argument("mlflow_args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def serve_command(
    data: str,
    host: str,
    port: int,
    backend_store_uri: str | None,
    auth: bool,
    admin_password_file: str | None,
    mlflow_args: tuple[str, ...],
) -> None:
    """Run a shared MLflow tracking server on PostgreSQL that proxies artifacts, until Ctrl-C.
    Clients set MLFLOW_TRACKING_URI=http://HOST:PORT; arguments after `--` go to `mlflow server`
    (for example `-- --allowed-hosts myhost:5000`).

    Bound beyond loopback, or with --auth, it uses MLflow's basic authentication: it refuses
    to start without the admin's password (MLFLOW_AUTH_ADMIN_PASSWORD or
    --admin-password-file), clients also set MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, and users made with `genbench tracking-server add-user` are
    read-only unless given --write."""
    from pipeline.auth import is_loopback, server_auth
    from pipeline.server import serve

    setup = None
    if auth or not is_loopback(host):
        try:
            setup = server_auth(Path(data), admin_password_file)
        except ServerError as exc:
            why = "--auth" if auth else f"--host {host} serves other machines, so it needs a login"
            raise ServerError(f"{why}: {exc}") from None

    def ready(url: str) -> None:
        users = " (with a user: MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD)"
        click.echo(
            f"tracking server ready: export MLFLOW_TRACKING_URI={url}{users if setup else ''}",
            err=True,
        )

    code = serve(Path(data), host, port, backend_store_uri, mlflow_args, ready, auth=setup)
    if code not in (0, -15, -2):  # stopped by Ctrl-C or SIGTERM is a normal end
        raise ServerError(f"mlflow server exited with code {code}")


@tracking_server.command("add-user")
@click.argument("name")
@click.option(
    "--url",
    envvar="MLFLOW_TRACKING_URI",
    help="the server (default: $MLFLOW_TRACKING_URI)",
)
@click.option(
    "--password-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="file whose first line is the new user's password (default: $GENBENCH_USER_PASSWORD)",
)
@click.option(
    "--write",
    "experiment",
    default=None,
    help="an experiment (e.g. the data set's, `digits`) the user may create and log runs in; "
    "without it the user is read-only",
)
@user_errors
def add_user_command(name: str, url: str | None, password_file: str | None, experiment: str | None):
    """Add user NAME to the server at --url, as its admin (MLFLOW_TRACKING_USERNAME=admin and
    MLFLOW_TRACKING_PASSWORD). The user reads every experiment and, with --write, also creates
    and logs runs in that one; deleting runs and managing users stay the admin's."""
    from pipeline.auth import USER_PASSWORD_ENV, add_user, read_password

    if url is None:
        raise ServerError("no server: set MLFLOW_TRACKING_URI or give --url http://HOST:PORT")
    if not url.startswith(("http://", "https://")):
        raise ServerError(f"--url={url} is not a tracking server (http://HOST:PORT)")
    password = read_password(password_file, "--password-file", USER_PASSWORD_ENV, f"user '{name}'")
    click.echo(add_user(url.rstrip("/"), name, password, experiment))


COMMANDS = [tracking_server]
