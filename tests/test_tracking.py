"""What a run looks like in MLflow: its experiment's view, its params, its data set input and
its logged model, which loads back in a fresh process and samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import genbench, set_params, tool_env

from pipeline import tracking


@pytest.fixture
def vae_run(prepared: Path, monkeypatch) -> str:
    set_params(prepared, model="vae")
    monkeypatch.setenv("CI", "true")
    for stage in ("train", "sample", "evaluate"):
        genbench(stage)
    return json.loads((prepared / "runs" / "run.json").read_text())["run_id"]


def test_a_run_is_named_once_with_shared_model_params_and_its_data_set(vae_run: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(vae_run)
    assert run.info.run_name == "vae-s0" and run.info.status == "FINISHED"
    assert run.data.params["vae.latent_dim"] == run.data.params["model.latent_dim"] == "2"
    assert run.data.params["model"] == "vae"
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "digits" and dataset.dataset.digest == run.data.tags["data"]
    profile = json.loads(dataset.dataset.profile)
    assert profile["train"] > 0 and profile["test"] > 0 and profile["shape"] == [1, 8, 8]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {"time/train", "time/sample", "time/evaluate"} <= set(run.data.metrics)


def test_the_logged_model_loads_in_a_fresh_process_and_samples(vae_run: str, prepared: Path):
    code = (
        "import mlflow, sys\n"
        f"model = mlflow.pytorch.load_model('runs:/{vae_run}/model')\n"
        "x = model.sample(16)\n"
        "print(tuple(x.shape), str(x.dtype), int(x.max()) < 17)\n"
    )
    env = tool_env(MLFLOW_TRACKING_URI=tracking.tracking_uri())
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=prepared, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "(16, 1, 8, 8) torch.uint8 True"


def test_train_writes_its_curves_as_dvc_plot_files(vae_run: str, prepared: Path):
    curves = prepared / "runs" / "curves"
    assert sorted(p.name for p in curves.iterdir()) == [
        "model-loss.csv",
        "val-bpd.csv",
        "val-quality.csv",
    ]
    lines = (curves / "model-loss.csv").read_text().splitlines()
    assert lines[0] == "step,value" and [ln.split(",")[0] for ln in lines[1:]] == ["2", "4"]


def test_copy_runs_moves_a_local_store_into_another_with_everything_a_run_holds(
    vae_run: str, prepared: Path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    parent = tracking.start_benchmark("digits", "bench-local", {"models": "vae", "seeds": "0"})
    tracking.adopt(vae_run, parent, "bench-local")
    tracking.finish(parent)
    source = tracking.tracking_uri()
    target = f"sqlite:///{prepared / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target)
    out = genbench("copy-runs", "--from", "sqlite:///mlflow.db")
    assert "runs of" in out and str(prepared / "mlflow.db") in out

    old, new = MlflowClient(source), MlflowClient(target)
    [copy] = new.search_runs(
        [new.get_experiment_by_name("digits").experiment_id], "tags.model = 'vae'"
    )
    run = old.get_run(vae_run)
    assert copy.data.params == run.data.params
    assert copy.data.metrics == run.data.metrics
    assert copy.info.status == "FINISHED" and copy.info.end_time == run.info.end_time
    assert copy.info.run_name == "vae-s0"
    history = [(m.step, m.value) for m in old.get_metric_history(vae_run, "train/model/loss")]
    copied = [
        (m.step, m.value) for m in new.get_metric_history(copy.info.run_id, "train/model/loss")
    ]
    assert copied == history and len(history) > 1
    # The child points at the copied parent, whose name the report merges by.
    new_parent = new.get_run(copy.data.tags["mlflow.parentRunId"])
    assert new_parent.data.tags[tracking.BENCHMARK_TAG] == "bench-local"
    assert [d.dataset.digest for d in copy.inputs.dataset_inputs] == [run.data.tags["data"]]
    names = {a.path for a in new.list_artifacts(copy.info.run_id, "samples")}
    assert "samples/samples.png" in names
    import mlflow

    model = mlflow.pytorch.load_model(f"runs:/{copy.info.run_id}/model")
    assert tuple(model.sample(4).shape) == (4, 1, 8, 8)
    # A second call copies nothing twice.
    genbench("copy-runs", "--from", "sqlite:///mlflow.db")
    assert len(new.search_runs([new.get_experiment_by_name("digits").experiment_id])) == len(
        old.search_runs([old.get_experiment_by_name("digits").experiment_id])
    )
