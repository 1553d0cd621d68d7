"""Conditional and translation models through the stages a user runs (`genbench prepare` ...
`genbench report`), in-process on tiny params: the metrics that say whether the condition was
obeyed reach metrics.json, MLflow and the report, with a figure of inputs beside outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import genbench, set_params

# model -> the condition metrics its metrics.json must hold
CONDITION_METRICS = {
    "text2image": {"condition_accuracy"},
    "puzzlegan": {"patch_error"},
    "cyclegan": {"label_preservation", "domain_accuracy", "cycle_error"},
    "stargan": {"label_preservation", "domain_accuracy", "cycle_error"},
}


def test_classifier_stage_also_trains_the_domain_classifier(prepared: Path):
    scores = json.loads((prepared / "runs" / "classifier.json").read_text())
    assert 0 <= scores["domain_classifier_domain_accuracy"] <= 1
    assert (prepared / "runs" / "classifiers" / "domains.pt").exists()
    assert (prepared / "runs" / "classifiers" / "classes.pt").exists()


@pytest.mark.parametrize("model", sorted(CONDITION_METRICS))
def test_conditional_model_trains_samples_evaluates_and_reports(prepared: Path, model: str):
    set_params(prepared, model=model, benchmark={"models": [model]})
    for stage in ("train", "sample", "evaluate"):
        genbench(stage)
    metrics = json.loads((prepared / "metrics.json").read_text())
    assert metrics["model"] == model and metrics["fid"] is not None
    for key in CONDITION_METRICS[model]:
        assert metrics[key] is not None and 0 <= metrics[key] <= 1, key
    assert (prepared / "runs" / "figures" / "conditions.png").exists()
    genbench("report")
    md = (prepared / "reports" / "benchmark.md").read_text()
    title = "Image-to-image translation" if model in ("cyclegan", "stargan") else "Conditional"
    assert f"## {title}" in md and "| data (real images) |" in md
    assert f"![{model} inputs beside outputs" in md
    # params.yaml's translation models use the semantic term: their rows say they saw labels
    assert (f"| {model} (labels) |" in md) == (model in ("cyclegan", "stargan"))
    assert (prepared / "reports" / "figures" / f"conditions_{model}.png").exists()


@pytest.mark.parametrize("model", ["baseline", "vae", "infogan"])
def test_unconditional_model_gets_the_metrics_it_declares(prepared: Path, model: str):
    set_params(prepared, model=model, infogan={"steps": 2, "g_channels": 4, "d_channels": 4})
    for stage in ("train", "sample", "evaluate"):
        genbench(stage)
    m = json.loads((prepared / "metrics.json").read_text())
    assert m["fid"] is not None and m["copy_rate"] is not None and m["protocol"]
    assert (m["bpd"] is not None) == (model != "infogan")
    assert (m["code_accuracy"] is not None) == (model == "infogan")
    assert (m["val_bpd"] is not None) == (model == "vae")  # a likelihood model trained in steps
    assert (m["train_images_per_s"] is None) == (model == "baseline")  # counting reads no batch
