"""The report: a benchmark's runs aggregated over seeds, one protocol per table, a data row,
rankings only where a test supports them, columns from the metric registry, values escaped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gen.evaluation import METRICS
from gen.plots import save_grid
from pipeline import report, tracking

PROTOCOL = "p1"


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture
def bench(store: Path, monkeypatch) -> str:
    """A benchmark parent run; runs started meanwhile are its children."""
    parent = tracking.start_benchmark("digits", "benchmark-test", {"models": "x"})
    tracking.set_tags(parent, {"protocol": PROTOCOL})
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    return parent


def finished_run(
    model: str,
    family: str,
    metrics: dict,
    tmp_path: Path,
    seed: int = 0,
    protocol: str = PROTOCOL,
    extractor: str = "classifier",
    losses=(3.0, 2.0, 1.5),
):
    run_id = tracking.start_run("digits", model, family, {"model": model}, seed)
    for step, value in enumerate(losses, start=1):
        tracking.log_metrics(run_id, {"train/model/loss": value}, step * 10)
    images = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    tracking.log_artifact(run_id, save_grid(images, 17, tmp_path / "samples.png"), "samples")
    tracking.log_metrics(run_id, metrics)
    tags = {"feature_extractor": extractor, "bpd_kind": "exact", "protocol": protocol}
    tracking.set_tags(run_id, tags)
    tracking.finish(run_id)
    return run_id


def data_row(draws: dict[str, list[float]], protocol: str = PROTOCOL) -> str:
    run_id = tracking.start_run("digits", "data", "data", {}, None)
    tracking.set_tags(run_id, {"protocol": protocol})
    for key, values in draws.items():
        for i, v in enumerate(values):
            tracking.log_metrics(run_id, {f"classifier/{key}": v}, i)
    tracking.finish(run_id)
    return run_id


def table(text: str, title: str) -> list[str]:
    """The rows (header first) of the Markdown table under heading `title`."""
    part = text.split(f"## {title}")[1].split("\n## ")[0]
    return [ln for ln in part.splitlines() if ln.startswith("| ")]


def test_cells_are_mean_sd_and_a_t_interval_over_seeds(store: Path, bench: str):
    for seed, fid in enumerate([10.0, 12.0, 14.0]):
        finished_run("dcgan", "adversarial", {"fid": fid}, store, seed=seed)
    finished_run("gan", "adversarial", {"fid": 30.0}, store, seed=0)
    md, _ = report.build_report("digits", store / "reports", ["dcgan", "gan"])
    rows = table(md.read_text(), "Likelihood and sample quality")
    half = 4.302653 * 2.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert rows[0] == "| model | n | FID |"  # columns no model has are left out
    assert rows[1] == f"| dcgan | 3 | 12.00 ± 2.00 [{12 - half:.2f}, {12 + half:.2f}] |"
    assert rows[2] == "| gan | 1 | 30.00 |"  # one seed: no spread, no interval


def test_the_data_row_stands_first_with_its_spread_over_draws(store: Path, bench: str):
    finished_run("dcgan", "adversarial", {"fid": 20.0, "precision": 0.7}, store)
    data_row({"fid": [9.0, 11.0], "precision": [0.9, 0.9]})
    md, page = report.build_report("digits", store / "reports", ["dcgan"])
    rows = table(md.read_text(), "Likelihood and sample quality")
    assert rows[1].startswith("| data (real images) | 2 |") and "10.00 ± 1.41" in rows[1]
    assert "class='data'" in page.read_text()


def test_runs_of_another_protocol_are_kept_out_and_listed(store: Path, bench: str):
    finished_run("dcgan", "adversarial", {"fid": 20.0}, store)
    finished_run("vae", "latent-variable", {"fid": 40.0}, store, protocol="other")
    md, _ = report.build_report("digits", store / "reports", ["dcgan", "vae"])
    text = md.read_text()
    assert "| dcgan |" in text and "| vae |" not in text
    assert "Kept out (another protocol fingerprint): vae-s0" in text


def test_ranking_says_better_only_where_welch_supports_it(store: Path, bench: str):
    for seed, (a, b, c) in enumerate([(10.0, 20.0, 21.0), (10.1, 20.5, 19.0), (9.9, 19.5, 23.0)]):
        finished_run("dcgan", "adversarial", {"fid": a}, store, seed=seed)
        finished_run("gan", "adversarial", {"fid": b}, store, seed=seed)
        finished_run("infogan", "adversarial", {"fid": c}, store, seed=seed)
    md, _ = report.build_report("digits", store / "reports", ["dcgan", "gan", "infogan"])
    text = md.read_text().split("### FID, unconditional models")[1]
    assert "1. dcgan" in text and "dcgan is better than gan (Welch t-test over seeds" in text
    assert "gan and infogan are not distinguishable" in text


def test_the_registry_drives_the_columns(store: Path, bench: str):
    quality = [m for m in METRICS if m.table == "quality"]
    finished_run("vae", "latent-variable", {m.key: 1.0 for m in quality}, store)
    md, _ = report.build_report("digits", store / "reports", ["vae"])
    text = md.read_text()
    heads = table(text, "Likelihood and sample quality")[0] + table(text, "Fidelity, diversity")[0]
    for m in quality:
        assert f"| {m.label} |" in heads, m.key
    assert metric_note("copy_rate") in text  # notes come from the registry too


def metric_note(key: str) -> str:
    return next(m.note for m in METRICS if m.key == key)[:40]


def test_conditional_and_translation_models_have_their_own_tables(store: Path, bench: str):
    finished_run("dcgan", "adversarial", {"fid": 10.0}, store)
    finished_run("puzzlegan", "conditional", {"fid": 12.0, "patch_error": 0.05}, store)
    translation = {"fid": 30.0, "label_preservation": 0.91, "domain_accuracy": 0.88}
    finished_run("stargan", "translation", translation, store, extractor="domain-classifier")
    md, _ = report.build_report("digits", store / "reports", ["dcgan", "puzzlegan", "stargan"])
    text = md.read_text()
    assert "| puzzlegan |" not in "\n".join(table(text, "Likelihood and sample quality"))
    cond = table(text, "Conditional generation")
    assert cond[0].startswith("| model | n | patch err | FID") and cond[1].startswith("| puzzlegan")
    trans = table(text, "Image-to-image translation")
    assert "label kept" in trans[0] and trans[1].startswith("| stargan | 1 | 0.910 | 0.880")
    figs = store / "reports" / "figures"
    assert (figs / "fid.png").exists() and (figs / "fid_translation.png").exists()
    assert (figs / "fid_conditional.png").exists()


def test_the_report_is_of_the_latest_benchmark_or_the_one_asked_for(store: Path, monkeypatch):
    first = tracking.start_benchmark("digits", "benchmark-1", {})
    monkeypatch.setenv(tracking.PARENT_ENV, first)
    finished_run("vae", "latent-variable", {"bpd": 2.2}, store)
    second = tracking.start_benchmark("digits", "benchmark-2", {})
    monkeypatch.setenv(tracking.PARENT_ENV, second)
    finished_run("dcgan", "adversarial", {"fid": 5.0}, store)
    assert list(report.collect("digits").runs.model) == ["dcgan"]
    assert list(report.collect("digits", first).runs.model) == ["vae"]
    with pytest.raises(report.ReportError, match="no benchmark run or name 'nope'"):
        report.collect("digits", "nope")


def test_a_run_that_did_not_finish_is_named_not_silently_dropped(store: Path, bench: str):
    finished_run("vae", "latent-variable", {"bpd": 2.1}, store)
    unfinished = tracking.start_run("digits", "dcgan", "adversarial", {}, 1)
    tracking.finish(unfinished, "FAILED")
    md, _ = report.build_report("digits", store / "reports", ["vae", "dcgan"])
    assert "Did not finish (not in the tables): dcgan-s1" in md.read_text()


def test_a_translation_trained_with_class_labels_is_marked_and_explained(store: Path, bench):
    semantic = {"label_preservation": 0.9, "domain_accuracy": 0.9, "fid": 300.0}
    run_id = finished_run("cyclegan", "translation", semantic, store, extractor="domain-classifier")
    tracking.set_tags(run_id, {"class_labels": "yes"})
    md, _ = report.build_report("digits", store / "reports", ["cyclegan"])
    text = md.read_text()
    assert "| cyclegan (labels) |" in text
    assert "(labels): trained with the training images' class labels" in text


def test_values_from_names_are_escaped_in_html_and_markdown(store: Path, bench: str):
    finished_run("<script>alert(1)</script>", "adversarial", {"fid": 1.0}, store)
    md, page = report.build_report("digits", store / "reports")
    for text in (page.read_text(), md.read_text()):
        assert "<script>" not in text and "&lt;script&gt;" in text


def test_an_experiment_that_failed_before_making_a_run_is_listed_as_failed(
    store: Path, monkeypatch
):
    parent = tracking.start_benchmark("digits", "b", {"models": "vae,dcgan", "seeds": "0"})
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    finished_run("vae", "latent-variable", {"bpd": 2.1}, store)
    tracking.finish(parent, "FAILED")  # as `genbench benchmark` does before its report
    md, page = report.build_report("digits", store / "reports", ["vae", "dcgan"], parent)
    assert "Did not finish (not in the tables): dcgan-s0." in md.read_text()
    assert "dcgan-s0" in page.read_text()


def test_a_new_report_replaces_the_figures_only_when_it_is_complete(
    store: Path, bench: str, monkeypatch
):
    out = store / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"old")
    (out / "figures" / "notes.txt").write_text("mine")
    (out / "benchmark.md").write_text("old report")
    finished_run("vae", "latent-variable", {"bpd": 2.1, "fid": 3.0}, store)

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report.render, "to_html", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report.build_report("digits", out, ["vae"])
    assert (out / "benchmark.md").read_text() == "old report"
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["notes.txt", "old.png"]
    assert not list(out.glob(".report-*"))  # no staging folder left behind

    monkeypatch.undo()
    monkeypatch.chdir(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    md, _ = report.build_report("digits", out, ["vae"], bench)
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "old.png" not in figures and "notes.txt" in figures and "samples_vae.png" in figures
    assert "samples_vae.png" in md.read_text()


def test_no_runs_is_an_error_and_the_old_report_stays(store: Path):
    out = store / "reports"
    out.mkdir()
    (out / "benchmark.md").write_text("old report")
    tracking.experiment_id("digits")  # a store, with nothing finished in it
    with pytest.raises(report.ReportError, match="no finished runs"):
        report.build_report("digits", out)
    assert (out / "benchmark.md").read_text() == "old report"


@pytest.mark.parametrize(
    ("name", "section", "expected"),
    [
        ("pixelcnn", {"channels": 8, "layers": 1}, set()),
        ("vae", {"hidden": 8, "latent_dim": 2}, {"interpolation.png"}),
        ("aae", {"hidden": 8, "latent_dim": 2}, {"interpolation.png", "codes.png"}),
        ("infogan", {"g_channels": 8, "d_channels": 8}, {"interpolation.png", "traversal.png"}),
        ("puzzlegan", {"g_channels": 4, "d_channels": 4}, {"conditions.png"}),
    ],
)
def test_sample_stage_draws_the_figures_a_model_is_capable_of(
    name, section, expected, tmp_path, digits
):
    from gen.registry import build
    from pipeline.stages import model_figures

    model = build(name, section, digits.meta).eval()
    made = model_figures(model, digits, tmp_path, seed=0)
    assert {p.name for p in made} == expected
    assert all(p.stat().st_size > 0 for p in made)


def benchmark_part(name: str, models: str, protocol: str, monkeypatch) -> str:
    """One host's part of benchmark `name`: a parent run (planned `models` x seed 0)."""
    parent = tracking.start_benchmark("digits", name, {"models": models, "seeds": "0"})
    tracking.set_tags(parent, {"protocol": protocol})
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    return parent


def test_parts_of_one_named_benchmark_merge_into_one_report(store: Path, monkeypatch):
    a = benchmark_part("nightly", "dcgan", PROTOCOL, monkeypatch)
    finished_run("dcgan", "adversarial", {"fid": 20.0}, store)
    tracking.finish(a)
    b = benchmark_part("nightly", "gan,vae", PROTOCOL, monkeypatch)
    finished_run("gan", "adversarial", {"fid": 30.0}, store)
    tracking.finish(b)
    other = benchmark_part("other", "infogan", PROTOCOL, monkeypatch)
    finished_run("infogan", "adversarial", {"fid": 5.0}, store)
    tracking.finish(other)
    md, _ = report.build_report("digits", store / "reports", benchmark_run="nightly")
    text = md.read_text()
    assert "| dcgan |" in text and "| gan |" in text and "| infogan |" not in text
    assert "Benchmark `nightly` (2 parts merged by name" in text
    assert "Did not finish (not in the tables): vae-s0" in text  # planned by part b, never run
    # One run id still means that one part only.
    md, _ = report.build_report("digits", store / "reports", benchmark_run=a)
    assert "| dcgan |" in md.read_text() and "| gan |" not in md.read_text()
    # Without a name: the newest benchmark's name.
    md, _ = report.build_report("digits", store / "reports")
    assert "| infogan |" in md.read_text() and "| dcgan |" not in md.read_text()


def test_a_part_of_another_protocol_is_listed_not_mixed(store: Path, monkeypatch):
    a = benchmark_part("nightly", "dcgan,gan", PROTOCOL, monkeypatch)
    finished_run("dcgan", "adversarial", {"fid": 20.0}, store)
    finished_run("gan", "adversarial", {"fid": 30.0}, store)
    tracking.finish(a)
    b = benchmark_part("nightly", "vae", "p2", monkeypatch)  # a host with another torch, say
    finished_run("vae", "latent-variable", {"fid": 40.0}, store, protocol="p2")
    tracking.finish(b)
    text = report.build_report("digits", store / "reports", benchmark_run="nightly")[0].read_text()
    assert "| dcgan |" in text and "| vae |" not in text
    assert "Kept out (another protocol fingerprint): vae-s0" in text
    assert "Did not finish" not in text


def test_a_part_still_running_is_pending_not_failed(store: Path, monkeypatch):
    a = benchmark_part("nightly", "dcgan", PROTOCOL, monkeypatch)
    finished_run("dcgan", "adversarial", {"fid": 20.0}, store)
    tracking.finish(a)
    benchmark_part("nightly", "gan", PROTOCOL, monkeypatch)  # another host, not done yet
    text = report.build_report("digits", store / "reports", benchmark_run="nightly")[0].read_text()
    assert "Still running in a part of this benchmark (not in the tables yet): gan-s0" in text
    assert "Did not finish" not in text


def test_an_unknown_benchmark_name_is_one_clear_error(store: Path, bench: str):
    finished_run("dcgan", "adversarial", {"fid": 20.0}, store)
    with pytest.raises(report.ReportError, match="no benchmark run or name 'nope'"):
        report.build_report("digits", store / "reports", benchmark_run="nope")
