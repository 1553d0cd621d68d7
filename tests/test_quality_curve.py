"""Quality along training: the schedule, the hook, the validation split only, the same figures
from the same seed and step, training untouched, and a killed run's curve continued."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import query, set_params

from gen.data import DataMeta, Split, load_split
from gen.quality_curve import FIGURES, ValidationQuality, curve_steps
from gen.registry import build
from gen.trainer import train
from pipeline import tracking, train_stage
from pipeline.params import load_params
from pipeline.stages import eval_protocol

META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
TINY = {
    "pixelcnn": {"channels": 8, "layers": 1},
    "ae": {"hidden": 8, "latent_dim": 2},
    "dcgan": {"g_channels": 8, "d_channels": 8, "z_dim": 4},
    "text2image": {"g_channels": 4, "d_channels": 4, "z_dim": 2},
    "puzzlegan": {"g_channels": 4, "d_channels": 4, "z_dim": 2},
    "cyclegan": {"g_channels": 4, "d_channels": 4, "res_blocks": 1},
    "stargan": {"g_channels": 4, "d_channels": 4, "res_blocks": 1},
}
N = 30  # samples a point


def images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, META.levels, (n, *META.shape), generator=g, dtype=torch.uint8)


def model_for(name: str, split: Split, seed: int = 0, **section):
    torch.manual_seed(seed)
    return build(name, {**TINY[name], "batch_size": 8, **section}, split.meta)


def curve_of(model, split: Split, seed: int = 0) -> ValidationQuality:
    return ValidationQuality(model, split, eval_protocol(load_params()), N, seed)


class Poison:
    """Stands in for a tensor of the test split: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")

    def __getitem__(self, key):
        raise AssertionError("the test split was read ([])")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"the test split was read ({func.__name__})")


def without_test(split: Split) -> Split:
    d = split.domains
    domains = replace(d, test_x=Poison(), test_y=Poison(), test_d=Poison())
    return replace(split, test_x=Poison(), test_y=Poison(), test_caption=Poison(), domains=domains)


# ----------------------------------------------------------------------------- the schedule
def test_points_halve_back_from_the_last_step():
    assert curve_steps(2000, 7) == (16, 31, 62, 125, 250, 500, 1000, 2000)
    assert curve_steps(4, 7) == (1, 2, 4)  # a short run rounds several onto one step
    assert curve_steps(2000, 0) == () and curve_steps(0, 7) == ()


def test_the_hook_runs_at_its_steps_in_eval_mode_with_the_compute_spent():
    model = build("pixelcnn", {**TINY["pixelcnn"], "steps": 10, "batch_size": 8}, META)
    seen: list[tuple[int, bool]] = []

    def curve(step: int) -> dict[str, float]:
        seen.append((step, model.training))
        return {"val/fid": float(step)}

    rows: list[tuple[int, dict[str, float]]] = []
    result = train(
        model,
        images(32),
        log_every=4,
        compute=True,
        curve=curve,
        curve_at=(1, 3, 4, 10),
        progress=False,
        callback=lambda s, r: rows.append((s, r)),
    )
    assert seen == [(1, False), (3, False), (4, False), (10, False)]
    assert model.training is False and result.curve_seconds > 0
    points = [(s, r) for s, r in rows if "val/fid" in r]
    assert [s for s, _ in points] == [1, 3, 4, 10]
    # Each step's compute is logged once: with the curve's figures, or in that step's log row.
    spent = [s for s, r in rows if "compute/flops" in r]
    assert spent == [1, 3, 4, 8, 10]
    spent_rows = [(s, r) for s, r in rows if "compute/flops" in r]
    assert all(r["compute/steps"] == s and r["compute/images"] == 8 * s for s, r in spent_rows)


# ------------------------------------------------------------------------ the curve itself
@pytest.mark.parametrize("name", ["pixelcnn", "text2image", "puzzlegan", "cyclegan", "stargan"])
def test_a_point_reads_the_validation_split_never_the_test_split(prepared: Path, name: str):
    split = without_test(load_split(Path("data/prepared")))
    model = model_for(name, split).eval()
    figures = curve_of(model, split)(5)
    if model.condition.name in ("caption", "domain"):  # the poison works: the final
        with pytest.raises(AssertionError, match="the test split was read"):  # samples read it
            model.condition.sampling_conditions(model, split, N, torch.Generator())
    assert set(figures) == {f"val/{k}" for k in FIGURES}
    assert all(math.isfinite(v) for v in figures.values())


def test_a_translation_model_without_the_data_sets_domain_is_scored_as_translated(
    prepared: Path,
):
    split = without_test(load_split(Path("data/prepared")))
    model = model_for("cyclegan", split, domain_a="bold", domain_b="serif").eval()
    assert all(math.isfinite(v) for v in curve_of(model, split)(5).values())


def test_the_same_seed_and_step_give_the_same_figures(prepared: Path):
    split = load_split(Path("data/prepared"))
    model = model_for("pixelcnn", split).eval()
    first, again = curve_of(model, split)(7), curve_of(model, split)(7)
    assert first.keys() == again.keys()
    assert all(first[k] == pytest.approx(again[k], rel=1e-6, abs=1e-9) for k in first)
    assert curve_of(model, split)(8) != first  # another step draws other samples


def test_a_point_scores_the_model_as_its_end_makes_it_ready_to_sample(prepared: Path):
    # The plain autoencoder samples from a Gaussian fitted to its codes once training ends: its
    # last curve point scores exactly what the finished model draws, and the fit is made on a
    # copy, so the model being trained keeps its unfitted N(0, I) until its end.
    split = load_split(Path("data/prepared"))
    model = model_for("ae", split, steps=6)
    seen: dict[int, dict[str, float]] = {}
    hook = curve_of(model, split)

    def curve(step: int) -> dict[str, float]:
        if step < 6:
            assert torch.equal(model.prior_cov, torch.eye(2))  # not fitted while training
        seen[step] = hook(step)
        return seen[step]

    train(model, split.train_x, curve=curve, curve_at=(3, 6), progress=False)
    assert not torch.equal(model.prior_cov, torch.eye(2))  # fitted at the end
    finished = curve_of(model, split)(6)
    assert all(seen[6][k] == pytest.approx(finished[k], rel=1e-6, abs=1e-9) for k in finished)


def test_curve_points_leave_the_trained_weights_bit_identical(prepared: Path):
    split = load_split(Path("data/prepared"))

    def trained(with_curve: bool):
        model = model_for("dcgan", split, steps=6)
        options = {}
        if with_curve:
            curve = curve_of(model, split)

            def greedy(step: int) -> dict[str, float]:
                torch.rand(3)  # a point that draws from the global generator as well
                return curve(step)

            options = {"curve": greedy, "curve_at": (1, 2, 3, 6)}
        train(model, split.train_x, seed=0, log_every=2, progress=False, **options)
        return model.state_dict()

    plain, curved = trained(False), trained(True)
    assert plain.keys() == curved.keys()
    assert all(torch.equal(plain[k], curved[k]) for k in plain)


# ------------------------------------------------------------------- a run in the pipeline
class Killed(Exception):
    """Stands in for the process being killed while it logs step 4."""


def steps_of(repo: Path, run_id: str, key: str) -> list[int]:
    sql = "select step from metrics where run_uuid = ? and key = ? order by step"
    return [s for (s,) in query(repo, sql, run_id, key)]


def test_a_killed_run_resumes_with_its_curve_and_compute_continuous(prepared: Path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    set_params(
        prepared,
        model="dcgan",
        dcgan={"steps": 12},
        train={"log_every": 2, "checkpoint_every": 2},
        eval={"curve_points": 3, "curve_samples": N},
    )
    log_metrics = tracking.log_metrics

    def killed_at_4(run_id, metrics, step=0):
        if step == 4 and any(k.startswith("train/") for k in metrics):
            raise Killed
        log_metrics(run_id, metrics, step)

    monkeypatch.setattr(tracking, "log_metrics", killed_at_4)
    with pytest.raises(Killed):  # after the checkpoint of step 2 and the curve point of step 3
        train_stage.train_model(load_params())
    monkeypatch.setattr(tracking, "log_metrics", log_metrics)
    summary = train_stage.train_model(load_params())

    run_id = json.loads((prepared / "runs" / "run.json").read_text())["run_id"]
    points = [2, 3, 6, 12]  # curve_steps(12, 3)
    for key in ("val/fid", "val/kid", "val/precision", "val/recall", "val/density"):
        assert steps_of(prepared, run_id, key) == points, key  # each once, none missing
    spent = [2, 3, 4, 6, 8, 10, 12]  # the log points and the curve's
    for key in ("compute/flops", "compute/images", "compute/steps", "compute/seconds"):
        assert steps_of(prepared, run_id, key) == spent, key
    sql = "select step, value from metrics where run_uuid = ? and key = 'compute/flops'"
    flops = dict(query(prepared, sql, run_id))
    assert flops[12] == summary["train_flops"] == 12 * summary["flops_per_step"]
    params = dict(query(prepared, "select key, value from params where run_uuid = ?", run_id))
    assert float(params["flops_per_step"]) == summary["flops_per_step"]
    assert steps_of(prepared, run_id, "time/curves") == [12]

    lines = (prepared / "runs" / "curves" / "val-quality.csv").read_text().splitlines()
    assert lines[0] == "step,flops,images,seconds,fid,kid,precision,recall,density,coverage"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == points
    assert [float(r[1]) for r in rows] == [flops[s] for s in points]
    assert [int(r[2]) for r in rows] == [64 * s for s in points]  # D reads a batch a step
