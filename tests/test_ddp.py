"""Training in several processes: torchrun + DistributedDataParallel, gloo on the CPU.

Two processes split every global batch; their step must be the one-process step at the same
global batch, only rank 0 may write or log, and a run must resume exactly. Every 2-process
training of this file's trainer tests runs in one torchrun launch (this file run as a script
is its worker), because starting processes costs far more than the tiny trainings.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gen.checkpoint import load_checkpoint, model_from_checkpoint
from gen.data import DataMeta
from gen.registry import build
from gen.trainer import deterministic_mode, train

META = DataMeta("digits", 1, 8, 8, levels=17, n_classes=10)
STEPS = 20
LOG_EVERY = 5
RESUME_AT = 10  # the interrupted run's last step: a multiple of LOG_EVERY
PIXELCNN = {
    "batch_size": 16,
    "channels": 8,
    "layers": 1,
    "first_kernel": 3,
    "dropout": 0.0,  # no randomness in a step: one and two processes must agree
    "lr": 3e-3,
}
DCGAN = {"batch_size": 16, "g_channels": 8, "d_channels": 8, "z_dim": 4}
# name -> (model, its config, the `steps` of each attempt: the later ones resume the earlier)
JOBS = {
    "pixelcnn": ("pixelcnn", PIXELCNN, [STEPS]),
    "dcgan": ("dcgan", DCGAN, [STEPS]),
    "dcgan-resumed": ("dcgan", DCGAN, [RESUME_AT, STEPS]),
}


def train_job(model_name: str, cfg: dict, steps: int, x: torch.Tensor, checkpoint: Path):
    """One attempt, as `genbench train` makes it: seed, build, train with a checkpoint."""
    deterministic_mode()
    torch.manual_seed(0)
    model = build(model_name, {**cfg, "steps": steps}, META)
    return train(
        model,
        x,
        seed=0,
        checkpoint=checkpoint,
        checkpoint_every=LOG_EVERY,
        log_every=LOG_EVERY,
        progress=False,
    )


def worker(folder: Path) -> None:
    """One rank: every job of JOBS in a gloo process group, checkpoints into `folder`."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        x = torch.load(folder / "x.pt", weights_only=True)
        for job, (name, cfg, attempts) in JOBS.items():
            for steps in attempts:
                train_job(name, cfg, steps, x, folder / f"{job}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data(digits) -> torch.Tensor:
    return digits.train_x[:512]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, data) -> dict[str, dict]:
    """The checkpoints of JOBS trained by two processes under torchrun."""
    folder = tmp_path_factory.mktemp("ddp")
    torch.save(data, folder / "x.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    proc = subprocess.run(
        [*cmd, __file__, str(folder)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {job: load_checkpoint(folder / f"{job}.pt") for job in JOBS}


def logged(ckpt: dict, key: str) -> list[float]:
    return [h[key] for h in ckpt["history"] if key in h]


def test_two_process_pixelcnn_equals_one_process_at_the_same_global_batch(
    two_processes, data, tmp_path
):
    one = train_job("pixelcnn", PIXELCNN, STEPS, data, tmp_path / "one.pt")
    ckpt = load_checkpoint(tmp_path / "one.pt")
    two = two_processes["pixelcnn"]
    assert two["step"] == STEPS
    assert two["images_seen"] == one.images_seen == STEPS * PIXELCNN["batch_size"]
    for key, tensor in ckpt["state_dict"].items():
        assert torch.allclose(two["state_dict"][key], tensor, rtol=1e-5, atol=1e-5), key
    # The logged loss is the mean over both ranks' halves: the one-process batch mean.
    assert logged(two, "model/loss") == pytest.approx(logged(ckpt, "model/loss"), rel=1e-5)


def test_two_process_pixelcnn_loss_is_finite_and_falls(two_processes):
    losses = logged(two_processes["pixelcnn"], "model/loss")
    assert len(losses) == STEPS // LOG_EVERY
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.1, losses


def test_two_process_dcgan_trains_both_phases_with_finite_losses_and_d_learns(two_processes):
    ckpt = two_processes["dcgan"]
    d, g = logged(ckpt, "d/loss"), logged(ckpt, "g/loss")
    assert len(d) == len(g) == STEPS // LOG_EVERY
    assert all(math.isfinite(v) for v in d + g)
    assert d[-1] < d[0] - 0.1, d  # the discriminator learns to tell the digits from fakes
    assert set(ckpt["optimisers"]) == {"d", "g"}


def test_a_two_process_checkpoint_holds_the_plain_model_and_loads_in_one_process(
    two_processes, data
):
    for job in ("pixelcnn", "dcgan"):
        ckpt = two_processes[job]
        assert not any(k.startswith(("module.", "model.")) for k in ckpt["state_dict"])
        model = model_from_checkpoint(ckpt)
        assert model.sample(4, torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)
    pixelcnn = model_from_checkpoint(two_processes["pixelcnn"])
    with torch.no_grad():
        assert torch.isfinite(pixelcnn.log_prob(data[:8])).all()


def test_the_checkpoint_holds_every_ranks_noise_state(two_processes):
    ckpt = two_processes["dcgan"]
    assert len(ckpt["rank_rng"]) == 2
    assert not torch.equal(ckpt["rank_rng"][0], ckpt["rank_rng"][1])  # ranks draw own noise
    assert torch.equal(ckpt["rank_rng"][0], ckpt["torch_rng"])  # one process resumes rank 0


def test_a_resumed_two_process_gan_run_equals_an_uninterrupted_one(two_processes):
    resumed, whole = two_processes["dcgan-resumed"], two_processes["dcgan"]
    assert resumed["step"] == whole["step"] == STEPS
    for key, tensor in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    assert logged(resumed, "d/loss") == logged(whole, "d/loss")


# ---- the `genbench train` stage with train.nproc: 2 -----------------------------------------


@pytest.fixture
def tiny_project(project, monkeypatch) -> Path:
    """A tiny project with its data prepared (in-process) and its own MLflow store."""
    from conftest import genbench, set_params

    set_params(
        project,
        model="pixelcnn",
        train={"device": "cpu", "nproc": 2, "log_every": 2, "checkpoint_every": 2},
        pixelcnn={"steps": 4, "batch_size": 8, "channels": 8, "layers": 1},
    )
    monkeypatch.chdir(project)
    genbench("prepare")
    return project


def test_genbench_train_with_nproc_2_logs_one_run_from_rank_0_and_writes_the_outputs(
    tiny_project,
):
    from conftest import query, run

    uri = f"sqlite:///{tiny_project / 'mlflow.db'}"
    proc = run(["genbench", "train"], tiny_project, MLFLOW_TRACKING_URI=uri)
    assert json.loads(proc.stdout)["train_steps"] == 4  # rank 0's result, printed once
    runs = query(tiny_project, "select run_uuid, status from runs")
    assert len(runs) == 1
    run_id, status = runs[0]
    assert status == "RUNNING"  # as with one process: `genbench evaluate` finishes the run
    steps = query(
        tiny_project,
        "select step from metrics where run_uuid = ? and key = ?",
        run_id,
        "train/model/loss",
    )
    assert sorted(s for (s,) in steps) == [2, 4]  # each point logged once: by rank 0 alone
    tags = dict(query(tiny_project, "select key, value from tags where run_uuid = ?", run_id))
    assert tags["nproc"] == "2"
    assert json.loads((tiny_project / "runs" / "run.json").read_text())["run_id"] == run_id
    assert (tiny_project / "runs" / "curves" / "model-loss.csv").exists()
    model = model_from_checkpoint(load_checkpoint(tiny_project / "runs" / "model.pt"))
    assert model.name == "pixelcnn"
    assert not (tiny_project / "runs" / "wip" / "pixelcnn.pt").exists()  # finished


def test_genbench_train_fails_with_one_line_when_the_workers_fail(project):
    from conftest import run, set_params

    set_params(project, train={"device": "cpu", "nproc": 2})  # no `genbench prepare` ran
    proc = run(["genbench", "train"], project, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "data/prepared" in errors[0], proc.stderr
    assert "ChildFailedError" not in proc.stderr  # torchrun's report is not shown


def train_cli(tmp_path: Path, *args: str, **sections) -> tuple[int, str]:
    """`genbench train ARGS` in-process on the project's params with `sections` merged in."""
    import yaml
    from click.testing import CliRunner
    from conftest import ROOT, _merge

    from pipeline.cli import main

    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), sections)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["train", "--params", str(path), *args])
    return result.exit_code, result.output.strip()


def test_a_batch_that_does_not_split_over_the_processes_fails_before_any_start(tmp_path):
    code, out = train_cli(
        tmp_path,
        "--nproc",
        "3",
        model="pixelcnn",
        train={"device": "cpu"},
        pixelcnn={"batch_size": 8},
    )
    assert (code, out) == (
        2,
        "Error: pixelcnn.batch_size=8 cannot be split evenly over train.nproc=3 processes; "
        "make it a multiple of 3",
    )


def test_train_nproc_out_of_range_is_a_one_line_error(tmp_path):
    code, out = train_cli(tmp_path, train={"nproc": 65})
    assert (code, out) == (2, "Error: train.nproc=65 must be in 1..64")


def test_nproc_on_cuda_needs_a_gpu_per_process(monkeypatch):
    from gen.config import ConfigError
    from pipeline.params import TrainSettings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    TrainSettings(device="cuda", nproc=2).validate()
    TrainSettings(device="cpu", nproc=8).validate()  # CPU processes need no GPU
    with pytest.raises(ConfigError, match=r"train.nproc=4 but this machine has 2 CUDA device"):
        TrainSettings(device="auto", nproc=4).validate()
    with pytest.raises(ConfigError, match=r"train.device=cuda:1 names one GPU"):
        TrainSettings(device="cuda:1", nproc=2).validate()


if __name__ == "__main__":  # a rank of the `two_processes` launch
    worker(Path(sys.argv[1]))
