"""Reproducible from commit + params + seed on any machine: seeding comes before anything
random is drawn, the ruler is the same bytes whatever the thread count and the CPU's vector
instructions, and the training seed changes only training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import genbench, set_params

from pipeline import provenance, train_stage


def test_the_model_is_built_after_the_seed_is_set(prepared: Path, monkeypatch):
    """Building draws the initial weights: it must see the RNG exactly as the seed left it."""
    set_params(prepared, model="vae", seed=7)
    expected = torch.manual_seed(7).get_state()
    seen = []
    real_build = train_stage.build

    def spy(*args, **kwargs):
        seen.append(torch.get_rng_state())
        return real_build(*args, **kwargs)

    torch.manual_seed(12345)  # whatever ran before must not matter
    monkeypatch.setattr(train_stage, "build", spy)
    genbench("train")
    assert len(seen) == 1 and torch.equal(seen[0], expected)


def metrics_of_a_run(project: Path, threads: int) -> dict:
    torch.set_num_threads(threads)  # the machine's thread count, as a user's shell might set it
    try:
        for stage in ("train", "sample", "evaluate"):
            genbench(stage)
    finally:
        torch.set_num_threads(1)
    return json.loads((project / "metrics.json").read_text())


def test_same_model_seed_and_commit_give_the_same_metrics_whatever_the_thread_count(
    prepared: Path,
):
    set_params(prepared, model="vae", seed=3)
    a = metrics_of_a_run(prepared, threads=1)
    b = metrics_of_a_run(prepared, threads=2)
    numbers = [k for k, v in a.items() if isinstance(v, float) and "seconds" not in k]
    numbers = [k for k in numbers if "per_s" not in k]
    assert {"bpd", "fid", "kid_mean", "density", "copy_rate"} <= set(numbers)
    for key in numbers:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key


def test_another_seed_trains_another_model(prepared: Path):
    set_params(prepared, model="vae", seed=0)
    a = metrics_of_a_run(prepared, threads=1)
    set_params(prepared, seed=1)
    b = metrics_of_a_run(prepared, threads=1)
    assert a["bpd"] != b["bpd"]


def test_the_ruler_is_the_same_bytes_whatever_the_thread_count(prepared: Path):
    first = provenance.classifier_hash(prepared / "runs" / "classifiers")
    torch.set_num_threads(2)
    try:
        genbench("classifier")
    finally:
        torch.set_num_threads(1)
    assert provenance.classifier_hash(prepared / "runs" / "classifiers") == first


def test_the_ruler_is_the_same_bytes_whatever_vector_instructions_the_cpu_offers(
    prepared: Path, monkeypatch
):
    """`genbench classifier` holds ATen, oneDNN and MKL to the instructions every x86-64 CPU
    has, so asking for wider ones, as a newer CPU would pick by itself, trains the same ruler
    (where the CPU has AVX2, the stage run without the hold trains another one)."""
    rulers = prepared / "runs" / "classifiers"
    first = provenance.classifier_hash(rulers)
    wider = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AUTO"}
    for key, value in wider.items():
        monkeypatch.setenv(key, value)
    out = json.loads(genbench("classifier"))
    assert out["classifier_cpu_kernels"] == "DEFAULT"
    assert provenance.classifier_hash(rulers) == first

    unheld = "from pipeline import stages, params; stages.train_classifier(params.load_params())"
    subprocess.run([sys.executable, "-c", unheld], check=True, capture_output=True)
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert provenance.classifier_hash(rulers) != first


def test_the_training_seed_changes_neither_the_data_nor_the_ruler(prepared: Path):
    data = provenance.split_hash(prepared / "data" / "prepared")
    ruler = provenance.classifier_hash(prepared / "runs" / "classifiers")
    set_params(prepared, seed=5)
    genbench("prepare")
    genbench("classifier")
    assert provenance.split_hash(prepared / "data" / "prepared") == data
    assert provenance.classifier_hash(prepared / "runs" / "classifiers") == ruler
    set_params(prepared, data={"seed": 1})
    genbench("prepare")
    assert provenance.split_hash(prepared / "data" / "prepared") != data
