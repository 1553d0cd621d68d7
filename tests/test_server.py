"""A shared tracking server and a benchmark over two hosts, on real engines on loopback: a
PostgreSQL cluster, `mlflow server` proxying artifacts, two clones of the project that each run
part of one named benchmark through it, one merged report, DVC experiments shared through a git
remote and a DVC remote."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import BIN, make_project, run, tool_env

pytestmark = pytest.mark.slow
NAME = "two-hosts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as reply:
            return reply.status == 200
    except OSError:
        return False


def postgres_processes(data: Path) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data) in " ".join(proc.info["cmdline"] or []):
            out.append(proc)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`genbench tracking-server` (PostgreSQL + mlflow server) on a free loopback port; stopped
    with SIGTERM afterwards, which must stop PostgreSQL too."""
    pytest.importorskip("pgserver", reason="PostgreSQL (pip package pgserver) is not installed")
    data = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "server.log").open("w")
    cmd = [str(BIN / "genbench"), "tracking-server", "--data", str(data), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--", "--workers", "2"], env=tool_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        ready = False  # the first healthy answer (a second ask may time out on a busy machine)
        for _ in range(600):
            ready = healthy(url)
            if ready or proc.poll() is not None:
                break
            subprocess.run(["sleep", "1"], check=True)
        assert ready, (data / "server.log").read_text()[-3000:]
        yield url, data
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
        log.close()
    assert code == 0, (data / "server.log").read_text()[-3000:]
    assert not postgres_processes(data / "postgres"), "PostgreSQL left running"


def clone(source: Path, dest: Path) -> Path:
    """A second "host": a git clone of the project, with its own git identity."""
    run(["git", "clone", "-q", str(source), str(dest)], source.parent)
    run(["git", "config", "user.email", "b@example.com"], dest)
    run(["git", "config", "user.name", "host b"], dest)
    return dest


def test_two_hosts_run_one_named_benchmark_through_a_postgres_backed_server(
    server, tmp_path: Path, monkeypatch
):
    url, data = server
    host_a = make_project(tmp_path / "a")
    host_b = clone(host_a, tmp_path / "b")
    env = tool_env(MLFLOW_TRACKING_URI=url)
    parts = {
        host_a: ["--models", "baseline", "--seeds", "0"],
        host_b: ["--models", "vae", "--seeds", "0"],
    }
    procs = {
        host: subprocess.Popen(
            [str(BIN / "genbench"), "benchmark", "--name", NAME, *args],
            cwd=host,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for host, args in parts.items()
    }
    for host, proc in procs.items():
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{host.name}:\n{out[-4000:]}"

    # One report of both parts, built from the server on either host.
    run(["genbench", "report", "--benchmark", NAME], host_a, MLFLOW_TRACKING_URI=url)
    md = (host_a / "reports" / "benchmark.md").read_text()
    assert "| baseline |" in md and "| vae |" in md
    assert f"Benchmark `{NAME}` (2 parts merged by name" in md
    assert "Did not finish" not in md and "Still running" not in md and "Kept out" not in md

    # Runs, metrics and tags are rows in PostgreSQL; artifacts sit in the server's folder and
    # come back through it; no host kept a store of its own.
    import psycopg

    dsn = f"postgresql://postgres@/mlflow?host={data / 'postgres'}"
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "select t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'model' and r.run_uuid in (select run_uuid from tags "
            "where key = 'genbench.benchmark_name' and value = %s)",
            (NAME,),
        ).fetchall()
    assert sorted(rows) == [("baseline", "FINISHED"), ("vae", "FINISHED")]
    for host in (host_a, host_b):
        assert not (host / "mlflow.db").exists() and not (host / "mlartifacts").exists()
    assert list((data / "artifacts").rglob("samples.png"))

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)
    runs = mlflow.search_runs(
        experiment_names=["digits"], filter_string=f"tags.`genbench.benchmark_name` = '{NAME}'"
    )
    by_model = dict(zip(runs["tags.model"], runs["run_id"], strict=True))
    png = mlflow.artifacts.download_artifacts(
        run_id=by_model["vae"], artifact_path="samples/samples.png", dst_path=str(tmp_path / "dl")
    )
    assert Path(png).read_bytes()[:4] == b"\x89PNG"
    images = mlflow.pytorch.load_model(f"runs:/{by_model['vae']}/model").sample(4)
    assert tuple(images.shape) == (4, 1, 8, 8)
    with urllib.request.urlopen(url, timeout=10) as reply:  # the MLflow UI itself
        assert reply.status == 200 and b"<html" in reply.read().lower()

    # DVC experiments stay on their host and travel by `dvc exp push`: host b's experiment,
    # pushed to a git remote and a local-folder DVC remote, is pulled and applied on host a.
    remote = tmp_path / "remote.git"
    run(["git", "init", "-q", "--bare", str(remote)], tmp_path)
    for host in (host_a, host_b):
        run(["git", "remote", "add", "shared", str(remote)], host)
        run(["dvc", "remote", "add", "--local", "-d", "shared", str(tmp_path / "dvc-store")], host)
    (exp,) = run(["dvc", "exp", "list", "--name-only"], host_b).stdout.split()
    run(["dvc", "exp", "push", "shared", exp], host_b)
    run(["dvc", "exp", "pull", "shared", exp], host_a)
    run(["dvc", "exp", "apply", exp], host_a)
    assert (host_a / "runs" / "model.pt").stat().st_size > 0
    assert '"model": "vae"' in (host_a / "metrics.json").read_text()


def test_the_url_a_server_is_reached_at_brackets_ipv6_and_reaches_a_wildcard_on_the_loopback():
    from pipeline.server import url_host

    assert f"http://{url_host('::1')}:5000" == "http://[::1]:5000"
    assert url_host("::") == "[::1]"
    assert url_host("0.0.0.0") == "127.0.0.1"
    assert url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("myhost") == "myhost"
