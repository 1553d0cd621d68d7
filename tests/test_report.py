"""The report: built from MLflow runs, one row per model, figures embedded, values escaped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gen.plots import save_grid
from pipeline import report, tracking


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def finished_run(
    model: str,
    family: str,
    metrics: dict,
    tmp_path: Path,
    losses=(3.0, 2.0, 1.5),
    extractor: str = "classifier",
):
    run_id = tracking.start_run("digits", model, family, {"model": model, "opt": {"lr": 0.001}})
    for step, value in enumerate(losses, start=1):
        tracking.log_metrics(run_id, {"train/model/loss": value}, step * 10)
    images = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    grid = save_grid(images, 17, tmp_path / "samples.png")
    tracking.log_artifact(run_id, grid, "samples")
    tracking.log_metrics(run_id, metrics)
    tracking.set_tags(run_id, {"feature_extractor": extractor, "bpd_kind": "exact"})
    tracking.finish(run_id)
    return run_id


def test_report_has_a_row_per_model_with_na_where_a_metric_does_not_apply(store: Path):
    finished_run("pixelcnn", "autoregressive", {"bpd": 1.9, "fid": 20.0, "params": 1000}, store)
    finished_run("dcgan", "adversarial", {"fid": 10.0, "params": 5000}, store)
    md, page = report.build_report("digits", store / "reports", ["pixelcnn", "dcgan"])
    text = md.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith(("| pixelcnn", "| dcgan"))]
    assert len(rows) == 2 and rows[0].startswith("| pixelcnn")  # benchmark order
    assert "1.900" in rows[0] and "n/a" in rows[1]  # a GAN has no bits/dim
    assert "20.00 [classifier]" in rows[0]  # the feature extractor stands beside the number
    for fig in ("bpd.png", "fid.png", "losses.png", "samples_pixelcnn.png", "samples_dcgan.png"):
        assert (store / "reports" / "figures" / fig).exists(), fig
    html_text = page.read_text()
    assert html_text.count("data:image/png;base64,") == 5  # self-contained: no file references
    assert "figures/" not in html_text


def test_fids_of_different_feature_extractors_are_charted_apart(store: Path):
    finished_run("dcgan", "adversarial", {"fid": 10.0}, store)
    finished_run("cyclegan", "translation", {"fid": 300.0}, store, extractor="domain-classifier")
    md, _ = report.build_report("digits", store / "reports", ["dcgan", "cyclegan"])
    figs = store / "reports" / "figures"
    assert (figs / "fid.png").exists() and (figs / "fid_domain-classifier.png").exists()
    text = md.read_text()
    assert "![FID [classifier]]" in text and "![FID [domain-classifier]]" in text


def test_a_translation_trained_with_class_labels_is_marked_and_explained(store: Path):
    semantic = {"label_preservation": 0.9, "domain_accuracy": 0.9, "fid": 300.0}
    run_id = finished_run("cyclegan", "translation", semantic, store)
    tracking.set_tags(run_id, {"class_labels": "yes"})
    finished_run("stargan", "translation", {"label_preservation": 0.8}, store)
    md, _ = report.build_report("digits", store / "reports", ["cyclegan", "stargan"])
    text = md.read_text()
    assert "| cyclegan (labels) |" in text and "| stargan |" in text
    assert "(labels): trained with the training images' class labels" in text


def test_no_labels_note_when_no_model_used_class_labels(store: Path):
    finished_run("stargan", "translation", {"label_preservation": 0.8}, store)
    md, _ = report.build_report("digits", store / "reports", ["stargan"])
    assert "(labels)" not in md.read_text()


def test_report_takes_the_latest_finished_run_of_each_model(store: Path):
    finished_run("vae", "latent-variable", {"bpd": 2.2}, store)
    finished_run("vae", "latent-variable", {"bpd": 2.1}, store)
    unfinished = tracking.start_run("digits", "vae", "latent-variable", {})
    tracking.log_metrics(unfinished, {"bpd": 9.9})
    df = report.collect("digits")
    assert list(df.model) == ["vae"] and df.bpd[0] == pytest.approx(2.1)


def test_values_from_params_and_run_names_are_escaped_in_html(store: Path):
    finished_run("<script>alert(1)</script>", "adversarial", {"fid": 1.0}, store)
    _, page = report.build_report("digits", store / "reports")
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_report_without_runs_says_how_to_make_them(store: Path):
    md, page = report.build_report("digits", store / "reports")
    assert "genbench benchmark" in md.read_text() and "genbench benchmark" in page.read_text()


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


def test_conditional_models_get_a_second_table_of_conditions_obeyed(store: Path):
    finished_run("dcgan", "adversarial", {"fid": 10.0}, store)
    finished_run(
        "stargan",
        "translation",
        {"fid": 30.0, "label_preservation": 0.91, "domain_accuracy": 0.88, "cycle_error": 0.05},
        store,
    )
    md, page = report.build_report("digits", store / "reports", ["dcgan", "stargan"])
    text = md.read_text()
    assert "## Conditions obeyed" in text
    second = text.split("## Conditions obeyed")[1]
    rows = [ln for ln in second.splitlines() if ln.startswith("| ")]
    assert rows[0].startswith("| model | family | condition acc | patch err | label kept")
    assert len(rows) == 2 and rows[1].startswith("| stargan")  # header, then stargan only
    assert "| n/a | n/a | 0.910 | 0.880 | 0.050 | 30.00 [classifier] |" in rows[1]
    assert "label kept = a classifier" in text  # the note says what the columns mean
    assert "Conditions obeyed" in page.read_text()
