"""The report's budget section from a constructed MLflow store: runs carrying compute and
validation curves as the trainer logs them, read at equal budgets (checked against hand
computations), compute to reach a quality, the Pareto front, and old runs without curves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline import report, tracking

PROTOCOL = "p1"
DATA_FID = [4.0, 6.0]  # the data row's test FID over two draws: floor 5, threshold 2x = 10
# model -> (family, FLOPs per step, curve steps, {seed: val/fid at those steps}, {seed: test FID})
MODELS = {
    "gan": ("adversarial", 1e5, [20, 200, 2000], {0: [100, 60, 50], 1: [110, 70, 52]}, [40, 42]),
    "dcgan": ("adversarial", 1e6, [10, 100, 1000], {0: [80, 30, 10], 1: [90, 40, 12]}, [9, 11]),
    "vae": ("latent-variable", 4e6, [100, 300, 500], {0: [60, 20, 8], 1: [50, 9, 7]}, [12, 14]),
}
SECONDS_PER_STEP = {0: 0.01, 1: 0.02}  # seed 1 trained on a slower machine, say
VAE_BPD = [(50, 3.0), (150, 2.5), (250, 2.2), (500, 2.0)]  # its own val_every, off the curve


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracking.start_benchmark("digits", "benchmark-test", {"models": "x"})
    tracking.set_tags(parent, {"protocol": PROTOCOL})
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    data = tracking.start_run("digits", "data", "data", {}, None)
    tracking.set_tags(data, {"protocol": PROTOCOL})
    for i, v in enumerate(DATA_FID):
        tracking.log_metrics(data, {"classifier/fid": v}, i)
    tracking.finish(data)
    return tmp_path


def trained_run(model: str, seed: int, curves: bool = True) -> str:
    """A finished run as the trainer and evaluation log it: compute at every curve point and at
    step 400 (a log point), validation FID at the curve points, the final test metrics."""
    family, per_step, steps, fid, test_fid = MODELS[model]
    run_id = tracking.start_run("digits", model, family, {"flops_per_step": per_step}, seed)
    if curves:
        logged = sorted(set(steps) | {400} if model == "vae" else set(steps))
        for step in logged:
            compute = {
                "compute/flops": step * per_step,
                "compute/seconds": step * SECONDS_PER_STEP[seed],
                "compute/steps": step,
                "compute/images": step * 64,
            }
            if step in steps:
                compute["val/fid"] = fid[seed][steps.index(step)]
            tracking.log_metrics(run_id, compute, step)
        if model == "vae":
            for step, bpd in VAE_BPD:
                tracking.log_metrics(run_id, {"val/bpd": bpd + 0.1 * seed}, step)
    final = {"fid": test_fid[seed], "train_flops": steps[-1] * per_step}
    if model == "vae":
        final["bpd"] = 1.9 + 0.1 * seed
    tracking.log_metrics(run_id, final if curves else {"fid": test_fid[seed]})
    tags = {"feature_extractor": "classifier", "bpd_kind": "exact", "protocol": PROTOCOL}
    tracking.set_tags(run_id, tags)
    tracking.finish(run_id)
    return run_id


def section(text: str) -> str:
    return text.split("## Budget: quality against training compute")[1].split("\n## ")[0]


def rows(text: str, title: str) -> dict[str, list[str]]:
    """The Markdown table under heading `title`: first cell -> the other cells."""
    part = text.split(title)[1].split("\n#")[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("| ")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return {c[0]: c[1:] for c in cells}


def log_interp(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    return y0 + (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) * (y1 - y0)


def test_the_budget_section_reads_every_model_at_equal_flops(store: Path):
    for model in MODELS:
        for seed in (0, 1):
            trained_run(model, seed)
    md, page = report.build_report("digits", store / "reports", list(MODELS))
    text = section(md.read_text())

    # Budgets: gan finishes first (2e8), dcgan at 1e9 (the median of 2e8, 1e9, 2e9 and the
    # second largest: listed once).
    table = rows(text, "validation FID at equal training FLOPs, unconditional")
    assert table["model"] == [
        "n",
        "at 2e+08 FLOPs (cheapest finish: gan)",
        "at 1e+09 FLOPs (median finish: dcgan)",
    ]
    assert table["data (real images, test FID)"][1:] == ["5.00 ± 1.41 [-7.71, 17.71]"] * 2
    # gan at its own last point; past it, not trained that far.
    assert table["gan"][1].startswith("51.00 ± 1.41") and table["gan"][2] == (
        "n/a (not trained that far)"
    )
    # dcgan at 2e8, between its points at 1e8 and 1e9 (in log-FLOPs), per seed, then the mean.
    seeds = [log_interp(1e8, 30, 1e9, 10, 2e8), log_interp(1e8, 40, 1e9, 12, 2e8)]
    assert table["dcgan"][1].startswith(f"{sum(seeds) / 2:.2f} ± ")
    assert table["dcgan"][2].startswith("11.00 ± 1.41")
    # vae's first point is at 4e8 FLOPs: nothing to read at 2e8; at 1e9 between 4e8 and 1.2e9.
    assert table["vae"][1] == "n/a (first measured later)"
    seeds = [log_interp(4e8, 60, 1.2e9, 20, 1e9), log_interp(4e8, 50, 1.2e9, 9, 1e9)]
    assert table["vae"][2].startswith(f"{sum(seeds) / 2:.2f} ± ")

    # Rankings per budget, worded as the report's: gan is not ranked at 1e9 (it never got there).
    ranking = text.split("Ranking: validation FID at 1e+09 FLOPs (median finish: dcgan)")[1]
    ranking = ranking.split("\n#")[0]
    assert "1. dcgan: 11.00" in ranking and "2. vae:" in ranking and ". gan:" not in ranking
    assert "dcgan and vae are not distinguishable (Welch t-test over seeds" in ranking

    # Compute to reach FID <= 10 (2x the data row's 5): dcgan's seed 0 reaches it at its last
    # point (1e9 FLOPs, 10 s), seed 1 never does; gan never does; vae both, interpolated.
    reach = rows(text, "Compute to reach a validation FID at most 2x the data row's (10.00)")
    assert reach["dcgan"] == ["1 of 2", "1e+09", "10"]
    assert reach["gan"] == ["0 of 2", "n/a (never reached)", "n/a (never reached)"]
    crossings = [
        math.exp(math.log(1.2e9) + 10 / 12 * math.log(2e9 / 1.2e9)),
        math.exp(math.log(4e8) + 40 / 41 * math.log(1.2e9 / 4e8)),
    ]
    assert reach["vae"][0] == "2 of 2"
    assert reach["vae"][1].startswith(f"{sum(crossings) / 2:.3g} ± ")

    # val/bpd was logged off the compute steps: joined by step (50 -> 2e8 FLOPs, 250 -> 1e9,
    # between the logged 100 and 300), read at the one budget of its table (vae's finish).
    bpd = rows(text, "validation bits/dim at equal training FLOPs")
    assert bpd["model"] == ["n", "at 2e+09 FLOPs (cheapest finish: vae)"]
    assert bpd["vae"][1].startswith("2.050 ± ")

    # The Pareto front: gan (cheapest) and dcgan (best); vae costs more than dcgan and is worse.
    assert (
        "Front, test FID, unconditional models [classifier], cheapest first: "
        "gan (2e+08 FLOPs, 41.00), dcgan (1e+09 FLOPs, 10.00)." in text
    )
    assert "Front, test bits/dim (likelihood models), cheapest first: vae (2e+09 FLOPs" in text
    figures = store / "reports" / "figures"
    for name in ("budget_fid_unconditional.png", "budget_bpd.png", "budget_pareto.png"):
        assert (figures / name).stat().st_size > 10_000, name
        assert f"figures/{name}" in text
    html = page.read_text()
    assert "<h2>Budget: quality against training compute</h2>" in html
    assert html.count("data:image/png;base64,") >= 3 + 2  # the budget charts beside the others


def test_old_runs_without_compute_say_so(store: Path):
    trained_run("dcgan", 0, curves=False)
    trained_run("gan", 0, curves=False)
    md, page = report.build_report("digits", store / "reports", ["dcgan", "gan"])
    text = section(md.read_text())
    assert text.strip().startswith("No compute curves in these runs")
    assert "budget_" not in text and "No compute curves in these runs" in page.read_text()


def test_a_model_without_a_curve_is_named_and_a_zero_flop_model_is_on_the_front(store: Path):
    trained_run("dcgan", 0)
    trained_run("gan", 0, curves=False)  # an older run among new ones
    baseline = tracking.start_run("digits", "baseline", "baseline", {}, 0)
    tracking.log_metrics(baseline, {"compute/flops": 0.0, "val/fid": 70.0}, 0)  # no steps
    tracking.log_metrics(baseline, {"fid": 60.0, "train_flops": 0.0})
    tracking.set_tags(baseline, {"feature_extractor": "classifier", "protocol": PROTOCOL})
    tracking.finish(baseline)
    md, _ = report.build_report("digits", store / "reports", ["baseline", "dcgan", "gan"])
    text = section(md.read_text())
    assert "No validation FID curve beyond 0 FLOPs: baseline, gan." in text
    assert "cheapest first: baseline (0 FLOPs, 60.00), dcgan (1e+09 FLOPs, 9.00)." in text
    assert "No total training FLOPs logged (not drawn): gan." in text


def test_genbench_steps_reads_the_step_counts_off_the_seeds_mean_validation_curves(store: Path):
    from click.testing import CliRunner

    from pipeline.cli import main

    for model in MODELS:
        for seed in (0, 1):
            trained_run(model, seed)
    (store / "params.yaml").write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    out = CliRunner().invoke(main, ["steps", "--fid-tolerance", "0.3"])
    assert out.exit_code == 0, out.output
    lines = {line.split(":")[0]: line for line in out.output.splitlines()}
    # gan's mean val FID: 105, 65, 51; within 30% of 51 (66.3) first at step 200
    assert lines["gan"].startswith("gan: steps 200 (trained 2000; seeds 0, 1)")
    # dcgan's: 85, 35, 11, still falling at its last point
    assert lines["dcgan"].startswith("dcgan: steps 1000 (trained 1000")
    assert "still improving at the last point" in lines["dcgan"]
    # vae: bits/dim within 0.5% only at 500; FID also at 500 (means 55, 14.5, 7.5)
    assert lines["vae"].startswith("vae: steps 500")
    assert "val bpd 2.05 at 500" in lines["vae"]
