"""`genbench score`: genbench's own samples, written out as an outside generator would write
them (a folder of PNGs, an .npz / .npy array, the logged MLflow model), score exactly as the
built-in evaluation scored them; several sets are seeds; `--benchmark` puts them in a report;
bad input is one `Error:` line each, nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import TINY, copy_project, genbench, query, with_a_finished_run
from PIL import Image

from gen.data import DataMeta
from gen.metrics import to_rgb8
from gen.outside_samples import to_levels
from pipeline import logged_models, provenance, stages, tracking
from pipeline.cli import main
from pipeline.params import load_params

QUALITY = ("fid", "fid_sd", "kid_mean", "kid_sd", "is_mean", "is_std", "precision", "recall")
QUALITY += ("density", "coverage", "copy_rate")
TABLES = ("runs", "tags", "params", "metrics", "experiments")
N = TINY["eval"]["n_samples"]  # what the protocol scores


@pytest.fixture(scope="module")
def made(prepared_template: Path, tmp_path_factory) -> Iterator[Path]:
    """The tiny project after train, sample and evaluate of pixelcnn (seed 0): its samples,
    their built-in figures (metrics.json) and its logged model."""
    repo = copy_project(prepared_template, tmp_path_factory.mktemp("score") / "repo")
    yield with_a_finished_run(repo)


@pytest.fixture
def repo(made: Path, monkeypatch) -> Path:
    monkeypatch.chdir(made)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{made / 'mlflow.db'}")
    monkeypatch.setenv("CI", "true")
    return made


def samples() -> torch.Tensor:
    return torch.load(stages.SAMPLES, weights_only=True)["images"]


def as_8bit(x: torch.Tensor) -> np.ndarray:
    """genbench images (N, 1, H, W) in 17 levels as 8-bit (N, H, W), as an outside tool has them."""
    return to_rgb8(x, 17)[:, 0].numpy()


def write_pngs(folder: Path, images: np.ndarray, mode: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        img = Image.fromarray(image)
        (img.convert(mode) if mode else img).save(folder / f"{i:04d}.png")
    return folder


def score(*args: str) -> dict:
    return json.loads(genbench("score", *args))


def built_in() -> dict:
    return json.loads(Path("metrics.json").read_text())


def assert_same_figures(run: dict, reference: dict) -> None:
    for key in QUALITY:
        assert run[key] == pytest.approx(reference[key], abs=1e-6), key


def store() -> tuple:
    return tuple(query(Path.cwd(), f"select count(*) from {t}")[0][0] for t in TABLES)


# ------------------------------------------------------------------- same figures
def test_a_folder_of_pngs_scores_as_the_built_in_evaluation(repo: Path, tmp_path: Path):
    folder = write_pngs(tmp_path / "pngs", as_8bit(samples()))
    out = score(str(folder), "--name", "outside")
    (run,) = out["runs"]
    assert_same_figures(run, built_in())
    assert out["protocol"] == built_in()["protocol"]
    tags = tracking.run_tags(run["run_id"])
    assert tags["family"] == "external" and tags["model"] == "outside" and tags["seed"] == "0"
    assert tags["protocol"] == built_in()["protocol"]
    assert tags["protocol.classifier"] == provenance.classifier_hash(stages.CLASSIFIERS)
    assert tracking.run_status(run["run_id"]) == "FINISHED"


def test_npz_and_npy_arrays_score_as_the_built_in_evaluation(repo: Path, tmp_path: Path):
    images = as_8bit(samples())
    np.savez(tmp_path / "x.npz", images=images)  # (N, H, W) uint8
    floats = (images[..., None] / 255.0).astype(np.float32)  # (N, H, W, 1) in [0, 1]
    np.save(tmp_path / "x.npy", floats)
    out = score(str(tmp_path / "x.npz"), "--name", "arrays")
    assert_same_figures(out["runs"][0], built_in())
    out = score(str(tmp_path / "x.npy"), "--name", "floats")
    assert_same_figures(out["runs"][0], built_in())


def test_the_logged_mlflow_model_scores_as_the_built_in_evaluation(repo: Path):
    run_id = json.loads(Path("runs/run.json").read_text())["run_id"]
    out = score(f"runs:/{run_id}/model", "--name", "from-mlflow")
    assert_same_figures(out["runs"][0], built_in())


def test_a_protocol_file_alone_scores_as_the_data_set_does(repo: Path, tmp_path: Path, monkeypatch):
    genbench("protocol", "export", str(tmp_path / "p.pt"))
    folder = write_pngs(tmp_path / "pngs", as_8bit(samples()))
    reference = built_in()
    monkeypatch.chdir(tmp_path)  # no data set, ruler or params.yaml here: only the file
    out = score(str(folder), "--name", "by-file", "--protocol", "p.pt")
    assert_same_figures(out["runs"][0], reference)
    assert out["protocol"] == reference["protocol"]


# ------------------------------------------------------------ seeds, benchmark, report
def test_several_sets_are_seeds_of_one_outside_model_in_the_benchmarks_report(
    repo: Path, tmp_path: Path
):
    fp = provenance.fingerprint(
        load_params().raw["data"], load_params().raw["eval"], stages.PREPARED, stages.CLASSIFIERS
    )
    parent = tracking.start_benchmark("digits", "bench", {"models": "pixelcnn", "seeds": "0"})
    tracking.set_tags(parent, fp)
    tracking.adopt(json.loads(Path("runs/run.json").read_text())["run_id"], parent, "bench")
    tracking.finish(parent)
    images = as_8bit(samples())
    a = write_pngs(tmp_path / "a", images)
    b = write_pngs(tmp_path / "b", images[::-1].copy())  # another seed's samples
    out = score(str(a), str(b), "--name", "theirs", "--benchmark", "bench")
    assert [r["seed"] for r in out["runs"]] == [0, 1]
    for r in out["runs"]:
        tags = tracking.run_tags(r["run_id"])
        assert tags["mlflow.parentRunId"] == parent and tags[tracking.BENCHMARK_NAME_TAG] == "bench"
    genbench("report", "--benchmark", "bench", "--out", str(tmp_path / "report"))
    md = (tmp_path / "report" / "benchmark.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| theirs (outside) | 2 |"))
    assert "±" in row  # two seeds: mean ± sd [interval]
    assert "| pixelcnn | 1 |" in md and "## Outside models (genbench score)" in md


def test_a_benchmark_of_another_protocol_is_refused(repo: Path, tmp_path: Path):
    parent = tracking.start_benchmark("digits", "elsewhere", {"models": "x", "seeds": "0"})
    tracking.set_tags(parent, {"protocol": "0123456789ab"})
    tracking.finish(parent)
    folder = write_pngs(tmp_path / "pngs", as_8bit(samples()))
    before = store()
    line = fails(str(folder), "--name", "theirs", "--benchmark", "elsewhere")
    assert "0123456789ab" in line and built_in()["protocol"] in line
    assert store() == before


# ---------------------------------------------------------------------- the rule
def test_the_rule_inverts_to_rgb8_and_replicates_gray_for_rgb():
    x = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    gray = DataMeta("d", 1, 8, 8, 17, 10)
    assert torch.equal(to_levels(as_8bit(x)[..., None], 255.0, gray, False, "x"), x)
    rgb = DataMeta("d", 3, 8, 8, 17, 10)
    assert torch.equal(
        to_levels(as_8bit(x)[..., None], 255.0, rgb, False, "x"), x.repeat(1, 3, 1, 1)
    )
    flat = np.full((2, 16, 16, 1), 128, np.uint8)  # resized, a flat image stays flat
    assert torch.equal(
        to_levels(flat, 255.0, gray, True, "x"), torch.full((2, 1, 8, 8), 8, dtype=torch.uint8)
    )


def test_resize_brings_larger_images_to_the_protocols_size(repo: Path, tmp_path: Path):
    images = as_8bit(samples())
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    folder = write_pngs(tmp_path / "big", big)
    out = score(str(folder), "--name", "resized", "--resize")
    assert 0 <= out["runs"][0]["fid"] < float("inf")


# ------------------------------------------------------------------------ bad input
def fails(*args: str) -> str:
    result = CliRunner().invoke(main, ["score", *args])
    line = result.output.strip()
    assert result.exit_code == 2, result.output
    assert line.startswith("Error: ") and "\n" not in line, result.output
    return line


def _good(tmp: Path, n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)


def _empty(tmp: Path) -> tuple[str, str]:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("not an image")
    return str(tmp / "empty"), "holds no PNG or JPEG images"


def _mixed_sizes(tmp: Path) -> tuple[str, str]:
    folder = write_pngs(tmp / "mixed", _good(tmp))
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / "0003.png")
    return str(folder), "0003.png' is 9x9 with 1 channel(s) but"


def _rgba(tmp: Path) -> tuple[str, str]:
    write_pngs(tmp / "rgba", _good(tmp), mode="RGBA")
    return str(tmp / "rgba"), "0000.png' has an alpha channel (PIL mode RGBA)"


def _sixteen_bit(tmp: Path) -> tuple[str, str]:
    write_pngs(tmp / "deep", _good(tmp).astype(np.uint16) * 257)
    return str(tmp / "deep"), "0000.png' is a 16-bit PNG"


def _two_channels(tmp: Path) -> tuple[str, str]:
    np.save(tmp / "two.npy", np.zeros((N, 8, 8, 2), np.uint8))
    return str(tmp / "two.npy"), f"(shape ({N}, 8, 8, 2)): 2 channels"


def _two_arrays(tmp: Path) -> tuple[str, str]:
    np.savez(tmp / "two.npz", a=_good(tmp), b=_good(tmp))
    return str(tmp / "two.npz"), "two.npz' holds 2 arrays (a, b)"


def _nan(tmp: Path) -> tuple[str, str]:
    x = np.full((N, 8, 8), 0.5, np.float32)
    x[3, 2, 1] = np.nan
    np.save(tmp / "nan.npy", x)
    return str(tmp / "nan.npy"), f"nan.npy' (shape ({N}, 8, 8)) has NaN or infinite values"


def _out_of_range(tmp: Path) -> tuple[str, str]:
    np.save(tmp / "wide.npy", np.full((N, 8, 8), 2.0))
    return str(tmp / "wide.npy"), "floating images must be in [0, 1]"


def _colour(tmp: Path) -> tuple[str, str]:
    np.save(tmp / "colour.npy", np.random.default_rng(0).integers(0, 256, (N, 8, 8, 3), np.uint8))
    return str(tmp / "colour.npy"), "colour images, but the protocol's are grayscale"


def _unreadable(tmp: Path) -> tuple[str, str]:
    folder = write_pngs(tmp / "broken", _good(tmp))
    (folder / "0005.png").write_bytes(b"\x89PNG not really")
    return str(folder), "0005.png' cannot be read as an image"


def _too_few(tmp: Path) -> tuple[str, str]:
    write_pngs(tmp / "few", _good(tmp, 10))
    return str(tmp / "few"), f"holds 10 images; the protocol scores {N}"


def _wrong_size(tmp: Path) -> tuple[str, str]:
    write_pngs(tmp / "big", np.zeros((N, 16, 16), np.uint8))
    return str(tmp / "big"), "images are 16x16, the protocol's are 8x8; pass --resize"


def _nonexistent(tmp: Path) -> tuple[str, str]:
    return str(tmp / "nowhere"), "nowhere' does not exist"


def _no_such_run(tmp: Path) -> tuple[str, str]:
    uri = "runs:/0123456789abcdef0123456789abcdef/model"
    return uri, f"{uri}: no MLflow model loads from it"


def _no_sample(tmp: Path) -> tuple[str, str]:
    run_id = tracking.start_run("digits", "linear", "x", {})
    logged_models.log_model(run_id, torch.nn.Linear(2, 2))
    tracking.finish(run_id)
    uri = f"runs:/{run_id}/model"
    return uri, f"{uri}: the model (Linear) has no sample(n)"


BAD = [
    _empty,
    _mixed_sizes,
    _rgba,
    _sixteen_bit,
    _two_channels,
    _two_arrays,
    _nan,
    _out_of_range,
    _colour,
    _unreadable,
    _too_few,
    _wrong_size,
    _nonexistent,
    _no_such_run,
    _no_sample,
]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_input_is_one_line_naming_it_and_nothing_is_written(repo: Path, tmp_path: Path, make):
    source, words = make(tmp_path)
    before, params = store(), Path("params.yaml").read_text()
    line = fails(source, "--name", "outside")
    assert words in line, line
    assert store() == before and Path("params.yaml").read_text() == params


def test_a_built_in_models_name_or_an_unknown_benchmark_is_refused(repo: Path, tmp_path: Path):
    folder = write_pngs(tmp_path / "pngs", as_8bit(samples()))
    before = store()
    assert "--name='pixelcnn' is not allowed" in fails(str(folder), "--name", "pixelcnn")
    assert "'no-such'" in fails(str(folder), "--name", "x", "--benchmark", "no-such")
    assert store() == before
    assert yaml.safe_load(Path("params.yaml").read_text())["model"] == "pixelcnn"
