"""Nobody gets into the shared tracking server who does not belong: `genbench tracking-server`
with MLflow's basic authentication (forced on loopback with --auth, as binding beyond loopback
does), a read-only user and a writer made with `genbench tracking-server add-user`, and a
benchmark that logs through it with a writer's credentials."""

from __future__ import annotations

import base64
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import BIN, query, run, tool_env
from test_server import free_port, healthy

ADMIN_PW = "admin-password-for-tests"
USERS = {"reader": "reader-password-1", "writer": "writer-password-2"}
EXPERIMENT = "digits"  # the tiny project's data set


def status(url: str, user: str | None = None, password: str = "") -> int:
    """HTTP status of a request that lists experiments, as `user` (or nobody)."""
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=5")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def as_user(user: str, password: str, **env: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password, **env}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`genbench tracking-server --auth` on a free loopback port (a SQLite store: PostgreSQL
    is tests/test_server.py's), its two users added by the admin; stopped with SIGTERM
    afterwards, which must end every process the server started."""
    pytest.importorskip("flask_wtf", reason="MLflow's auth extra (Flask-WTF) is not installed")
    data = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data / "server.log"
    cmd = [
        str(BIN / "genbench"),
        "tracking-server",
        "--auth",
        "--data",
        str(data),
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{data / 'mlflow.db'}",
        "--",
        "--workers",
        "1",
    ]
    # MLflow's job runners (seven processes) are not needed here, and the CPU is shared.
    env = tool_env(MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PW, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # ready once the admin's login was checked
            if "tracking server ready" in log_path.read_text() or proc.poll() is not None:
                break
            time.sleep(1)
        assert "tracking server ready" in log_path.read_text(), log_path.read_text()[-3000:]
        server_processes = psutil.Process(proc.pid).children(recursive=True)
        admin = as_user("admin", ADMIN_PW)
        for user, password in USERS.items():
            write = ["--write", EXPERIMENT] if user == "writer" else []
            out = run(
                ["genbench", "tracking-server", "add-user", user, "--url", url, *write],
                data,
                GENBENCH_USER_PASSWORD=password,
                **admin,
            ).stdout
            assert f"user '{user}'" in out
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    assert code == 0, log_path.read_text()[-3000:]
    time.sleep(1)  # the kernel reaps what init adopted
    left = [p for p in server_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"left running: {[p.cmdline() for p in left]}"
    assert not healthy(url)


@pytest.mark.slow
def test_a_client_without_a_valid_login_gets_401(auth_server: str):
    url = auth_server
    assert healthy(url)  # /health stays open: it is how clients see the server is up
    assert status(url) == 401
    assert status(url, "admin", "not-the-password") == 401
    assert status(url, "nobody", "some-long-password") == 401
    assert status(url, "reader", USERS["reader"]) == 200
    assert status(url, "admin", ADMIN_PW) == 200


@pytest.mark.slow
def test_a_restart_with_another_admin_password_is_refused_in_one_line(
    auth_server: str, tmp_path: Path
):
    """MLflow keeps the admin password its user store was made with and ignores a new one."""
    from pipeline.auth import ServerAuth, check_admin
    from pipeline.errors import ServerError

    check_admin(auth_server, ServerAuth(tmp_path, ADMIN_PW))
    with pytest.raises(ServerError, match="not the one .*users.db was created with"):
        check_admin(auth_server, ServerAuth(tmp_path, "another-admin-password"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "needs a user: set MLFLOW_TRACKING_USERNAME"),
        (as_user("writer", "a-wrong-password"), "refused user 'writer'"),
    ],
    ids=["no-login", "wrong-password"],
)
def test_a_genbench_command_without_a_valid_login_says_so_in_one_line(
    auth_server: str, project: Path, env: dict[str, str], says: str
):
    params = (project / "params.yaml").read_bytes()
    proc = run(
        ["genbench", "benchmark", "--models", "baseline", "--seeds", "0"],
        project,
        check=False,
        MLFLOW_TRACKING_URI=auth_server,
        **env,
    )
    line = one_error_line(proc)
    assert auth_server in line and says in line, line
    assert (project / "params.yaml").read_bytes() == params
    assert not run(["git", "status", "--porcelain"], project).stdout  # refused before any work


@pytest.mark.slow
def test_a_read_only_user_cannot_create_or_delete_runs_a_writer_cannot_delete(
    auth_server: str, monkeypatch
):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url = auth_server

    def client(user: str, password: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(url)

    def refused(call) -> int:
        with pytest.raises(MlflowException) as caught:
            call()
        return caught.value.get_http_status_code()

    admin = client("admin", ADMIN_PW)
    eid = admin.get_experiment_by_name(EXPERIMENT).experiment_id  # made by add-user --write
    admins = admin.create_run(eid).info.run_id
    admin.log_metric(admins, "fid", 1.0)

    reader = client("reader", USERS["reader"])
    assert reader.get_run(admins).data.metrics == {"fid": 1.0}  # it reads
    assert refused(lambda: reader.create_run(eid)) == 403
    assert refused(lambda: reader.log_metric(admins, "fid", 9.0)) == 403
    assert refused(lambda: reader.set_tag(admins, "model", "forged")) == 403
    assert refused(lambda: reader.delete_run(admins)) == 403

    writer = client("writer", USERS["writer"])
    writers = writer.create_run(eid).info.run_id
    writer.log_metric(writers, "fid", 2.0)
    writer.set_terminated(writers)
    assert refused(lambda: writer.delete_run(admins)) == 403  # EDIT writes, never deletes

    admin = client("admin", ADMIN_PW)
    admin.delete_run(admins)
    assert admin.get_run(admins).info.lifecycle_stage == "deleted"
    assert admin.get_run(writers).data.metrics == {"fid": 2.0}


@pytest.mark.slow
def test_only_the_admin_adds_users(auth_server: str, tmp_path: Path):
    add = ["genbench", "tracking-server", "add-user", "mallory", "--url", auth_server]
    pw = {"GENBENCH_USER_PASSWORD": "mallory-password"}
    line = one_error_line(
        run(add, tmp_path, check=False, **pw, **as_user("reader", USERS["reader"]))
    )
    assert "403" in line or "ermission" in line, line
    line = one_error_line(run(add, tmp_path, check=False, **pw))
    assert "needs a user" in line, line
    assert status(auth_server, "mallory", "mallory-password") == 401  # never made


@pytest.mark.slow
def test_a_benchmark_with_a_writers_login_logs_to_the_server_end_to_end(
    auth_server: str, reproduced: Path, monkeypatch
):
    import mlflow

    project = reproduced
    env = as_user("writer", USERS["writer"], MLFLOW_TRACKING_URI=auth_server)
    run(["genbench", "benchmark", "--models", "baseline", "--seeds", "0"], project, **env)
    assert "| baseline |" in (project / "reports" / "benchmark.md").read_text()
    local = "select count(*) from tags where key = 'model' and value = 'baseline'"
    assert query(project, local) == [(0,)]  # nothing went to the clone's own store

    for key, value in as_user("reader", USERS["reader"]).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(auth_server)
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT], filter_string="tags.model = 'baseline'"
    )
    assert list(runs["status"]) == ["FINISHED"]
    png = mlflow.artifacts.download_artifacts(
        run_id=runs["run_id"][0], artifact_path="samples/samples.png", dst_path=str(project / "dl")
    )
    assert Path(png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "password", "says"),
    [
        (["--host", "0.0.0.0"], None, "--host 0.0.0.0 serves other machines"),
        (["--host", "192.0.2.7"], None, "no password for user 'admin'"),
        (["--auth"], "", "set MLFLOW_AUTH_ADMIN_PASSWORD"),
        (["--auth"], "short", "at least 12"),
        (["--host", "::", "--admin-password-file", "empty.txt"], None, "no password"),
        (["--auth", "--admin-password-file", "missing.txt"], None, "missing.txt"),
    ],
    ids=["wildcard", "an-address", "empty-env", "short", "empty-file", "missing-file"],
)
def test_a_server_beyond_loopback_or_with_auth_refuses_to_start_without_a_password(
    tmp_path: Path, monkeypatch, args: list[str], password: str | None, says: str
):
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    if password is None:
        monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    (tmp_path / "empty.txt").write_text("\n")
    port = free_port()
    cmd = ["tracking-server", "--data", "srv", "--port", str(port), *args]
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0], result.stderr
    assert not (tmp_path / "srv").exists()  # nothing made, nothing started
    assert not healthy(f"http://127.0.0.1:{port}")
