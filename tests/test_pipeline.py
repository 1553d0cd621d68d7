"""The pipeline as a user runs it: `dvc repro`, `dvc exp run -S ...`, the CLI and its errors."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import query, run, set_params

from pipeline import tracking
from pipeline.cli import main

DVC = [sys.executable, "-m", "dvc"]
METRIC_KEYS = {
    "model",
    "dataset",
    "bpd",
    "elbo_bpd",
    "fid",
    "is_mean",
    "is_std",
    "kid_mean",
    "precision",
    "recall",
    "train_seconds",
    "sample_images_per_s",
    "params",
    "density",
    "coverage",
    "copy_rate",
    "fid_sd",
    "val_bpd",
    "protocol",
}


def runs_in_store(repo: Path) -> list[tuple[str, str]]:
    """(model tag, status) of every run in the repository's own MLflow store."""
    return query(
        repo,
        "select t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'model' order by r.start_time",
    )


@pytest.mark.slow
def test_dvc_repro_then_exp_run_trains_evaluates_tracks_and_reports(reproduced: Path):
    project = reproduced  # prepare, classifier and reference ran through DVC in the template
    run([*DVC, "repro"], project)

    metrics = json.loads((project / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["model"] == "pixelcnn" and metrics["dataset"] == "digits"
    assert metrics["bpd"] > 0 and metrics["fid"] >= 0 and metrics["elbo_bpd"] is None
    assert metrics["feature_extractor"] == "classifier"
    assert runs_in_store(project) == [("data", "FINISHED"), ("pixelcnn", "FINISHED")]
    md = (project / "reports" / "benchmark.md").read_text()
    assert "| pixelcnn |" in md
    page = (project / "reports" / "benchmark.html").read_text()
    assert "data:image/png;base64," in page

    # A new model reruns train/sample/evaluate only; data and classifier come from DVC's cache.
    out = run([*DVC, "exp", "run", "-S", "model=dcgan"], project).stdout
    assert "Stage 'prepare' didn't change" in out
    assert "Stage 'classifier' didn't change" in out
    assert "Running stage 'train'" in out
    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["model"] == "dcgan" and metrics["bpd"] is None
    models = {m for m, status in runs_in_store(project) if status == "FINISHED"}
    assert models == {"data", "pixelcnn", "dcgan"}
    md = (project / "reports" / "benchmark.md").read_text()
    assert "| pixelcnn |" in md and "| dcgan |" in md and "n/a" in md

    shown = run([*DVC, "exp", "show", "--json"], project).stdout
    assert "fid" in shown


@pytest.mark.slow
def test_benchmark_runs_one_experiment_per_model_and_seed_under_one_parent_run(
    reproduced: Path,
):
    project = reproduced  # the benchmark's first step, `dvc repro reference`, finds it done
    set_params(
        project,
        model="baseline",
        seed=0,
        benchmark={"models": ["baseline", "vae"], "seeds": [0, 1], "jobs": 1},
    )
    run(["git", "commit", "-qam", "two models"], project)
    before = (project / "params.yaml").read_text()
    out = run(["genbench", "benchmark"], project).stderr
    assert "timings (s):" in out and "vae-s1" in out and "stage processes" in out
    assert (project / "params.yaml").read_text() == before
    md = (project / "reports" / "benchmark.md").read_text()
    assert "| baseline | 2 |" in md and "| vae | 2 |" in md and "| data (real images) |" in md
    assert "iwae-2" in md  # the VAE's bits/dim is labelled as a bound
    exps = run([*DVC, "exp", "list", "--name-only"], project).stdout.split()
    assert {e.rsplit("-", 2)[0] for e in exps} >= {"baseline-s0", "baseline-s1", "vae-s0", "vae-s1"}
    con = sqlite3.connect(project / "mlflow.db")
    parents = con.execute(
        "select count(*) from tags where key = 'mlflow.parentRunId' group by value"
    ).fetchall()
    con.close()
    assert parents == [(4,)]  # one benchmark run with a child per (model, seed)
    # The workspace holds the results of the model and seed params.yaml names (baseline,
    # seed 0), not those of the experiment that ran last (vae, seed 1).
    assert json.loads((project / "metrics.json").read_text())["model"] == "baseline"
    assert json.loads((project / "runs" / "run.json").read_text())["seed"] == 0

    # DVC's own view: `dvc plots show` draws every model's curves from the report.
    assert (project / "reports" / "curves" / "vae.model-loss.csv").exists()
    run([*DVC, "plots", "show", "-o", "plots"], project)
    page = (project / "plots" / "index.html").read_text()
    assert "reports/curves/vae.model-loss.csv" in page

    # Another training seed reruns only the model's stages: the data and the ruler are cached.
    out = run([*DVC, "exp", "run", "-S", "seed=2", "-S", "model=vae"], project).stdout
    for stage in ("prepare", "classifier", "reference"):
        assert f"Stage '{stage}' didn't change" in out, stage
    for stage in ("train", "sample", "evaluate"):
        assert f"Running stage '{stage}'" in out, stage


def test_mlflow_store_of_a_dvc_temp_experiment_is_the_main_repository(tmp_path: Path):
    main_repo = tmp_path / "repo"
    temp_copy = main_repo / ".dvc" / "tmp" / "exps" / "tmpab12" / "sub"
    temp_copy.mkdir(parents=True)
    assert tracking.repo_root(temp_copy) == main_repo.resolve()


def test_tracking_uri_honours_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert tracking.tracking_uri() == "http://example.invalid:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri().startswith("sqlite:///") and tracking.tracking_uri().endswith(
        "mlflow.db"
    )


# ----------------------------------------------------------------------------- clear errors
def _invoke(repo: Path, *args: str, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _one_line_error(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_unknown_model_lists_the_known_ones(project: Path, monkeypatch):
    set_params(project, model="nope")
    code, out = _invoke(project, "train", monkeypatch=monkeypatch)
    line = _one_line_error(out)
    assert code == 2 and "unknown model 'nope'" in line and "pixelcnn" in line and "dcgan" in line


def test_negative_learning_rate_fails_before_training(project: Path, monkeypatch):
    set_params(project, vae={"lr": -0.1}, model="vae")
    code, out = _invoke(project, "train", monkeypatch=monkeypatch)
    assert code == 2 and "vae.lr=-0.1 must be > 0" in _one_line_error(out)
    assert not (project / "mlflow.db").exists()  # nothing started


def test_unknown_data_set_names_the_allowed_ones(project: Path, monkeypatch):
    set_params(project, data={"name": "imagenet"})
    code, out = _invoke(project, "prepare", monkeypatch=monkeypatch)
    line = _one_line_error(out)
    assert code == 2 and "imagenet" in line and "mnist" in line and "digits" in line


def test_data_the_model_cannot_take_fails_before_any_stage(project: Path, monkeypatch):
    set_params(project, model="cyclegan", data={"domains": "none"})
    code, out = _invoke(project, "prepare", monkeypatch=monkeypatch)
    line = _one_line_error(out)
    assert code == 2 and "'cyclegan' needs domains" in line and "data.domains" in line
    assert not (project / "data").exists() and not (project / "runs" / "model.pt").exists()


def test_missing_data_set_says_where_to_put_the_files(project: Path, monkeypatch):
    set_params(project, data={"name": "mnist", "root": str(project / "nowhere")})
    monkeypatch.setenv("NO_PROXY", "*")
    code, out = _invoke(project, "prepare", monkeypatch=monkeypatch)
    line = _one_line_error(out)
    assert code == 2 and "MNIST/raw" in line and "nowhere" in line


def test_corrupt_checkpoint_is_a_clear_error(project: Path, monkeypatch):
    (project / "runs").mkdir(exist_ok=True)
    (project / "runs" / "model.pt").write_bytes(b"not a checkpoint")
    code, out = _invoke(project, "sample", monkeypatch=monkeypatch)
    line = _one_line_error(out)
    assert code == 2 and "corrupt" in line and "model.pt" in line


def test_bad_param_type_is_a_clear_error(project: Path, monkeypatch):
    set_params(project, pixelcnn={"layers": "many"})
    code, out = _invoke(project, "train", monkeypatch=monkeypatch)
    assert code == 2 and "pixelcnn.layers='many' must be an integer" in _one_line_error(out)


def test_the_queue_runs_the_longest_experiments_first():
    from pipeline.benchmark import _longest_first
    from pipeline.params import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    planned = [(m, s) for s in (0, 1) for m in ("baseline", "vae", "stargan")]
    order = _longest_first(p, planned)
    assert sorted(order) == sorted(planned)
    assert [m for m, _ in order] == ["stargan", "stargan", "vae", "vae", "baseline", "baseline"]


def test_throughput_command_measures_every_model_asked_for(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    result = CliRunner().invoke(
        main, ["throughput", "--models", "vae,dcgan", "--steps", "2", "--samples", "4"]
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:3]}
    assert set(rows) == {"vae", "dcgan"}
    for cells in rows.values():
        assert all(float(c.replace(",", "")) > 0 for c in cells[1:])
    assert "device cpu" in result.output


def test_throughput_command_names_a_device_it_cannot_use(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    result = CliRunner().invoke(main, ["throughput", "--models", "vae", "--device", "cuda:7"])
    assert result.exit_code == 2 and result.output.startswith("Error: --device=cuda:7")


def test_a_benchmark_applies_its_params_model_only_over_its_own_outputs():
    from pipeline.benchmark import foreign_changes

    own = ["metrics.json", "dvc.lock", "params.yaml", "runs/run.json", "reports/benchmark.md"]
    assert foreign_changes(own) == []
    # The user's uncommitted work would be overwritten by `dvc exp apply`: it is named.
    assert foreign_changes([*own, "gen/models/vae.py", "README.md"]) == [
        "gen/models/vae.py",
        "README.md",
    ]
