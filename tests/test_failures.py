"""Bad input and faults, as a user meets them: one `Error:` line and exit status 2, nothing
changed (params.yaml, the MLflow store, earlier results), no run left RUNNING."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import copy_project, genbench, query, run, set_params, tool_env, with_a_finished_run

from pipeline import store_check, tracking
from pipeline.cli import main

# --------------------------------------------------------------------- a prepared project
CONTENTS = ("params.yaml", "metrics.json", "runs/model.pt", "runs/run.json", "reports")


@pytest.fixture(scope="module")
def repo(prepared_template, tmp_path_factory) -> Iterator[Path]:
    """A tiny project with data, classifier, data row and one finished pixelcnn run: the
    earlier results every probe must leave alone."""
    repo = copy_project(prepared_template, tmp_path_factory.mktemp("probes") / "repo")
    yield with_a_finished_run(repo, "report")


def store_state(repo: Path) -> tuple:
    """Everything in the MLflow store a probe could have changed."""
    db = repo / "mlflow.db"
    if not db.exists():
        return ()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return tuple(
                tuple(con.execute(f"select * from {t} order by 1, 2").fetchall())
                for t in ("experiments", "runs", "tags", "params", "metrics")
            )
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return (hashlib.sha256(db.read_bytes()).hexdigest(),)


def results_state(repo: Path) -> dict[str, str]:
    out = {}
    for name in CONTENTS:
        path = repo / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                out[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------- faults a probe sets up
@contextlib.contextmanager
def moved(path: Path, replacement: Callable[[Path], None]) -> Iterator[None]:
    """`path` replaced by what `replacement` writes there, and put back afterwards."""
    keep = path.with_name(path.name + ".keep")
    path.rename(keep)
    try:
        replacement(path)
        yield
    finally:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        keep.rename(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _pickle(path: Path) -> None:
    torch.save({"name": "pixelcnn", "payload": Evil()}, path)


FAULTS: dict[str, Callable[[Path], contextlib.AbstractContextManager]] = {
    "corrupt checkpoint": lambda r: moved(
        r / "runs/model.pt", lambda p: p.write_bytes(b"not a checkpoint")
    ),
    "malicious pickle": lambda r: moved(r / "runs/model.pt", _pickle),
    "corrupt store": lambda r: moved(r / "mlflow.db", lambda p: p.write_bytes(b"x" * 4096)),
    "runs is a file": lambda r: moved(r / "runs", lambda p: p.write_text("in the way")),
    "empty store": lambda r: moved(r / "mlflow.db", lambda p: None),
    "params is a list": lambda r: moved(r / "params.yaml", lambda p: p.write_text("- a\n- b\n")),
    "yaml syntax error": lambda r: moved(
        r / "params.yaml", lambda p: p.write_text("model: vae\nvae:\n  lr: [0.1\n")
    ),
}

# (id, params changes, command line, what the one line must say, fault)
PROBES = [
    ("unknown model", {"model": "nope"}, ["train"], "unknown model 'nope'", None),
    ("model not a string", {"model": 3}, ["train"], "must be a model name", None),
    ("seed not an integer", {"seed": "x"}, ["train"], "seed'='x' must be an integer", None),
    ("seed a boolean", {"seed": True}, ["sample"], "must be an integer", None),
    ("negative lr", {"model": "vae", "vae": {"lr": -0.1}}, ["train"], "vae.lr=-0.1", None),
    ("huge lr", {"model": "vae", "vae": {"lr": 1e12}}, ["train"], "must be <= 1", None),
    ("infinite lr", {"model": "vae", "vae": {"lr": float("inf")}}, ["train"], "vae.lr=inf", None),
    ("nan lr", {"model": "vae", "vae": {"lr": float("nan")}}, ["train"], "vae.lr=nan", None),
    ("bad type", {"pixelcnn": {"layers": "many"}}, ["train"], "'many' must be an integer", None),
    ("unknown key", {"pixelcnn": {"depth": 3}}, ["train"], "unknown key 'depth'", None),
    ("negative steps", {"pixelcnn": {"steps": -1}}, ["train"], "pixelcnn.steps=-1", None),
    ("zero batch", {"pixelcnn": {"batch_size": 0}}, ["train"], "batch_size=0", None),
    ("beta1 >= 1", {"model": "vae", "vae": {"beta1": 1.5}}, ["train"], "beta1/beta2", None),
    ("bad gan loss", {"model": "dcgan", "dcgan": {"gan_loss": "w"}}, ["train"], "gan_loss", None),
    ("zero d_steps", {"model": "dcgan", "dcgan": {"d_steps": 0}}, ["train"], "d_steps=0", None),
    ("section not a mapping", {"model": "vae", "vae": 3}, ["train"], "must be a mapping", None),
    ("cuda without cuda", {"train": {"device": "cuda"}}, ["train"], "no CUDA device", None),
    ("unknown device", {"train": {"device": "tpu"}}, ["train"], "'tpu' is not allowed", None),
    ("bad precision", {"train": {"precision": "fp8"}}, ["train"], "'fp8' is not allowed", None),
    ("zero log_every", {"train": {"log_every": 0}}, ["train"], "log_every must be > 0", None),
    ("zero threads", {"train": {"threads": 0}}, ["sample"], "threads=0", None),
    ("huge n_samples", {"eval": {"n_samples": 100000000}}, ["sample"], "2..200000", None),
    ("one sample", {"eval": {"n_samples": 1}}, ["sample"], "n_samples=1", None),
    ("bad extractor", {"eval": {"feature_extractor": "vgg"}}, ["evaluate"], "'vgg'", None),
    ("zero iwae_k", {"eval": {"iwae_k": 0}}, ["evaluate"], "iwae_k=0", None),
    ("unknown data set", {"data": {"name": "imagenet"}}, ["prepare"], "'imagenet'", None),
    ("tiny image size", {"data": {"image_size": 2}}, ["prepare"], "image_size=2", None),
    ("two channels", {"data": {"channels": 2}}, ["prepare"], "channels=2", None),
    ("test fraction", {"data": {"test_fraction": 1.5}}, ["prepare"], "test_fraction", None),
    ("unknown domains", {"data": {"domains": "x"}}, ["prepare"], "domains='x'", None),
    (
        "stargan without domains",
        {"model": "stargan", "data": {"domains": "none"}},
        ["prepare"],
        "needs domains",
        None,
    ),
    (
        "text2image without captions",
        {"model": "text2image", "data": {"captions": "none"}},
        ["prepare"],
        "needs captions",
        None,
    ),
    (
        "cyclegan without domains",
        {"model": "cyclegan", "data": {"domains": "none"}},
        ["classifier"],
        "needs domains",
        None,
    ),
    (
        "unknown domain name",
        {"model": "cyclegan", "cyclegan": {"domain_b": "martian"}},
        ["prepare"],
        "'martian' is not a domain",
        None,
    ),
    ("benchmark zero jobs", {"benchmark": {"jobs": 0}}, ["benchmark"], "jobs=0", None),
    ("benchmark unknown", {"benchmark": {"models": ["nope"]}}, ["benchmark"], "'nope'", None),
    ("benchmark seed", {"benchmark": {"seeds": [-1]}}, ["benchmark"], "seeds=[-1]", None),
    ("--models unknown", {}, ["benchmark", "--models", "vae,nope"], "'nope'", None),
    ("--seeds not ints", {}, ["benchmark", "--seeds", "a,b"], "--seeds='a,b'", None),
    ("--seeds repeated", {}, ["benchmark", "--seeds", "1,1"], "must be distinct", None),
    (
        "--models cyclegan without domains",
        {"data": {"domains": "none"}},
        ["benchmark", "--models", "vae,cyclegan"],
        "'cyclegan' needs domains",
        None,
    ),
    ("missing params file", {}, ["train", "--params", "nope.yaml"], "'nope.yaml' not found", None),
    ("params a list", {}, ["train"], "must be a mapping", "params is a list"),
    ("yaml syntax", {}, ["train"], "at line 4, column 1", "yaml syntax error"),
    ("corrupt checkpoint", {}, ["sample"], "is corrupt", "corrupt checkpoint"),
    ("malicious pickle", {}, ["evaluate"], "was refused", "malicious pickle"),
    ("corrupt store", {}, ["train"], "mlflow.db cannot be read", "corrupt store"),
    ("corrupt store, report", {}, ["report"], "cannot be read", "corrupt store"),
    ("runs is a file", {}, ["train"], "'runs'", "runs is a file"),
    ("report nowhere", {}, ["report", "--out", "params.yaml/out"], "params.yaml", None),
    ("report of nothing", {}, ["report"], "no MLflow store", "empty store"),
    ("report unknown benchmark", {}, ["report", "--benchmark", "x1"], "no benchmark run", None),
    ("unknown preset", {}, ["preset", "nope"], "nope", None),
]


# MLflow keeps its database engine per process: a store swapped under a running process is
# not what a user meets, so these run as the user runs them, in a new process.
FRESH_PROCESS = {"corrupt store", "empty store"}


def invoke(repo: Path, args: list[str], fresh: bool) -> tuple[int, str]:
    """Exit status and everything printed of `genbench ARGS`."""
    if fresh:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
        proc = run(["genbench", *args], repo, check=False, **env)
        return proc.returncode, proc.stdout + proc.stderr
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output + (
        "Traceback" if result.exception and not isinstance(result.exception, SystemExit) else ""
    )


@pytest.mark.parametrize(
    ("changes", "args", "says", "fault"),
    [pytest.param(*p[1:], id=p[0]) for p in PROBES],
)
def test_bad_input_is_one_error_line_and_changes_nothing(
    repo: Path, monkeypatch, changes, args, says, fault
):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    monkeypatch.setattr(store_check, "_checked", set())  # as in a new process
    original = (repo / "params.yaml").read_text()
    try:
        if changes:
            set_params(repo, **changes)
        with FAULTS[fault](repo) if fault else contextlib.nullcontext():
            params, store, results = (
                (repo / "params.yaml").read_bytes(),
                store_state(repo),
                results_state(repo),
            )
            code, output = invoke(repo, args, fresh=fault in FRESH_PROCESS)
            assert (repo / "params.yaml").read_bytes() == params
            assert store_state(repo) == store
            assert results_state(repo) == results
        assert code == 2, output
        assert "Traceback" not in output
        lines = output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), output
        assert says in lines[0], lines[0]
        assert not (repo / "pwned.txt").exists()
    finally:
        (repo / "params.yaml").write_text(original)
    assert len(PROBES) >= 40


def test_training_that_diverges_is_one_line_and_its_run_is_marked_failed(repo: Path, monkeypatch):
    from gen.models.pixelcnn import PixelCNN

    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")

    def nan_loss(self, x, phase, y=None):
        return {"loss": self.logits(x).sum() * float("nan")}

    monkeypatch.setattr(PixelCNN, "loss", nan_loss)
    monkeypatch.setenv("CI", "true")  # no progress bar
    wip = repo / "runs" / "wip"
    before = store_state(repo)
    result = CliRunner().invoke(main, ["train"])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("Error: pixelcnn") and "nan" in line and "\n" not in line
    con = sqlite3.connect(repo / "mlflow.db")
    statuses = con.execute("select status from runs").fetchall()
    con.close()
    assert len(statuses) == len(before[1]) + 1 and ("RUNNING",) not in statuses
    assert ("FAILED",) in statuses
    for f in wip.glob("*"):
        f.unlink()  # the failed attempt's checkpoint, so later tests start afresh


def test_a_failed_evaluate_marks_the_run_failed_and_the_next_attempt_finishes_it(
    repo: Path, monkeypatch
):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    # A run whose evaluate has not succeeded yet (a FINISHED run stays FINISHED when a later
    # evaluate fails: tests/test_checkpoint_faults.py), whichever tests ran here before.
    genbench("train")
    genbench("sample")
    run_id = yaml.safe_load((repo / "runs" / "run.json").read_text())["run_id"]
    with moved(repo / "runs" / "classifiers", lambda p: p.mkdir()):
        result = CliRunner().invoke(main, ["evaluate"])
        assert result.exit_code == 2 and "classes.pt" in result.output, result.output
        assert tracking.run_status(run_id) == "FAILED"
    genbench("evaluate")
    assert tracking.run_status(run_id) == "FINISHED"


# ---------------------------------------------------------------- a dead tracking server
@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "command"),
    [(closed_port, ["train"]), (silent_server, ["benchmark", "--models", "vae"])],
    ids=["refused", "silent"],
)
def test_a_dead_tracking_server_fails_within_a_minute_in_one_line(prepared: Path, server, command):
    project = prepared  # its data prepared as `genbench prepare` does, in the session's template
    with server() as uri:
        t0 = time.monotonic()
        proc = run(["genbench", *command], project, check=False, MLFLOW_TRACKING_URI=uri)
        seconds = time.monotonic() - t0
    assert seconds < 60, seconds
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and uri in lines[0], proc.stderr
    assert not (project / "runs" / "model.pt").exists()


# -------------------------------------------------------- kill -9 inside `dvc exp run`
DVC = [sys.executable, "-m", "dvc"]
LONG = {
    "model": "vae",
    "vae": {"steps": 400},
    "train": {"log_every": 5, "checkpoint_every": 25},
}
QUALITY = ("bpd", "elbo_bpd", "fid", "kid_mean", "precision", "recall", "val_bpd")


def vae_runs(repo: Path) -> list[tuple[str, str]]:
    return query(
        repo,
        "select r.run_uuid, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'model' and t.value = 'vae'",
    )


def loss_steps(repo: Path, run_id: str) -> list[int]:
    sql = "select step from metrics where run_uuid = ? and key = 'train/model/loss' order by step"
    return [s for (s,) in query(repo, sql, run_id)]


@pytest.mark.slow
def test_kill_9_during_train_in_dvc_exp_run_then_rerun_equals_an_uninterrupted_run(
    reproduced: Path,
):
    project = reproduced  # data and rulers in DVC's cache: `dvc exp run` goes straight to train
    set_params(project, **LONG)
    run(["git", "commit", "-qam", "longer vae"], project)
    wip = project / "runs" / "wip" / "vae.pt"
    proc = subprocess.Popen(
        [*DVC, "exp", "run"],
        cwd=project,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not wip.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, 9)
    proc.wait()
    assert wip.exists(), "training ended before it could be killed"
    step = torch.load(wip, weights_only=True)["step"]
    assert 0 < step < 400
    [(run_id, status)] = vae_runs(project)
    assert status == "RUNNING"  # nothing could mark it: the next attempt finds it

    run([*DVC, "exp", "run"], project)
    assert vae_runs(project) == [(run_id, "FINISHED")]  # the same run, continued
    assert loss_steps(project, run_id) == list(range(5, 401, 5))  # from the start, no repeats
    assert not wip.exists()
    resumed = torch.load(project / "runs" / "model.pt", weights_only=True)["state_dict"]
    got = yaml.safe_load((project / "metrics.json").read_text())

    # The same training, uninterrupted: the same weights and the same metrics.
    run([*DVC, "repro", "--force", "--single-item", "train"], project)
    run([*DVC, "repro"], project)
    clean = torch.load(project / "runs" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], clean[k]) for k in clean)
    want = yaml.safe_load((project / "metrics.json").read_text())
    for key in QUALITY:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key


# --------------------------------------------------------- `genbench benchmark --jobs 2`
def child_runs(repo: Path) -> dict[str, str]:
    """model-seed -> status of the latest benchmark's child runs."""
    con = sqlite3.connect(repo / "mlflow.db")
    try:
        parent = con.execute(
            "select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'genbench.benchmark' order by r.start_time desc limit 1"
        ).fetchone()[0]
        rows = con.execute(
            "select r.run_uuid, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
            "where t.key = 'mlflow.parentRunId' and t.value = ?",
            (parent,),
        ).fetchall()
        out = {}
        for run_id, status in rows:
            tags = dict(con.execute("select key, value from tags where run_uuid = ?", (run_id,)))
            out[f"{tags['model']}-s{tags['seed']}"] = (run_id, status)
        return out
    finally:
        con.close()


@pytest.mark.slow
def test_benchmark_with_two_jobs_finishes_every_run_or_names_the_failed_one(
    reproduced: Path, tmp_path: Path
):
    project = reproduced  # the benchmark's first step, `dvc repro reference`, finds it done
    before = (project / "params.yaml").read_text()
    cmd = ["genbench", "benchmark", "--models", "baseline,vae", "--seeds", "0", "--jobs", "2"]
    run(cmd, project)
    assert (project / "params.yaml").read_text() == before
    children = child_runs(project)
    assert {k: s for k, (_, s) in children.items()} == {
        "baseline-s0": "FINISHED",
        "vae-s0": "FINISHED",
    }
    # The experiments ran in DVC's temporary copies, which are gone: the artifacts are not.
    leftovers = project / ".dvc" / "tmp" / "exps"
    assert not any(p.name.startswith("tmp") for p in leftovers.rglob("*") if p.is_dir())
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    for run_id, _ in children.values():
        got = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="samples/samples.png", dst_path=str(tmp_path / run_id)
        )
        assert Path(got).stat().st_size > 0
        assert str(project / "mlartifacts") in mlflow.get_run(run_id).info.artifact_uri
    md = (project / "reports" / "benchmark.md").read_text()
    assert "| baseline | 1 |" in md and "| vae | 1 |" in md and "Did not finish" not in md

    # A model that breaks: the benchmark says which, fails, and the report lists it.
    model_file = project / "gen" / "models" / "baseline.py"
    model_file.write_text(
        model_file.read_text().replace(
            "def fit_data(self, train_x: torch.Tensor) -> None:",
            "def fit_data(self, train_x: torch.Tensor) -> None:\n"
            "        raise RuntimeError('made to fail')",
        )
    )
    run(["git", "commit", "-qam", "break the baseline"], project)
    proc = run(cmd, project, check=False, PYTHONPATH=str(project))  # the copy's gen/, broken
    assert proc.returncode != 0
    assert "did not finish: baseline-s0" in proc.stderr
    assert (project / "params.yaml").read_text() == before
    assert child_runs(project)["vae-s0"][1] == "FINISHED"
    md = (project / "reports" / "benchmark.md").read_text()
    assert "Did not finish (not in the tables): baseline-s0" in md and "| vae | 1 |" in md


def test_an_attempt_killed_with_nothing_left_to_resume_is_marked_killed(repo: Path, monkeypatch):
    from pipeline import provenance, stages

    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    monkeypatch.setenv("CI", "true")
    made_by = {"code": provenance.code_hash(), "data": provenance.split_hash(stages.PREPARED)}
    # What a killed attempt in a deleted DVC temp copy leaves: a RUNNING run, no checkpoint.
    stale = tracking.start_run("digits", "pixelcnn", "autoregressive", {}, 0, made_by)
    other_seed = tracking.start_run("digits", "pixelcnn", "autoregressive", {}, 1, made_by)
    genbench("train")
    assert tracking.run_status(stale) == "KILLED"
    assert tracking.run_status(other_seed) == "RUNNING"  # another attempt's business
    tracking.finish(other_seed, "KILLED")


@pytest.mark.slow
def test_a_failed_workspace_exp_run_says_it_left_its_edits_in_params_yaml(project: Path):
    cmd = [*DVC, "exp", "run", "-S", "model=cyclegan", "-S", "data.domains=none"]
    proc = run(cmd, project, check=False)
    assert proc.returncode != 0
    [line] = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error:")]
    assert "'cyclegan' needs domains" in line and "git checkout params.yaml" in line
    assert "Traceback" not in proc.stdout + proc.stderr
