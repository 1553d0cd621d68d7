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
    assert sorted(p.name for p in curves.iterdir()) == ["model-loss.csv", "val-bpd.csv"]
    lines = (curves / "model-loss.csv").read_text().splitlines()
    assert lines[0] == "step,value" and [ln.split(",")[0] for ln in lines[1:]] == ["2", "4"]
