"""The defaults fit any data: every model trains, samples and is evaluated on MNIST-format IDX
files at 28x28 and on an RGB 32x32 image folder (both written here); widths the colour channels
split are rounded up and recorded; `benchmark.models: all` runs what the data can serve and
lists the rest; a suite per bundled data set; the 8x8 digits default is as it was."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import ROOT, query, run, set_params
from PIL import Image
from test_data import write_idx

from gen import classifier as clf
from gen.checkpoint import load_checkpoint, model_from_checkpoint
from gen.conditions import draw
from gen.data import DataConfig, DataMeta, Split, expected_meta
from gen.datasets import load
from gen.evaluation import Protocol, evaluate_model
from gen.models.base import count_params
from gen.registry import MODELS, build
from gen.trainer import train
from pipeline import presets
from pipeline.cli import main
from pipeline.params import load_params
from pipeline.presets import SUITES_DIR, available, closest_suite
from pipeline.report import collection, render
from pipeline.selection import select
from pipeline.train_stage import used_params

N = 30  # samples per model: enough for k-nearest-neighbour metrics per translation target
# The autoregressive models draw one subpixel at a time (3072 steps at 32x32x3): 6 samples,
# still more than the 5 nearest neighbours density and coverage count.
N_AUTOREGRESSIVE = 6
# Tiny sections; the autoregressive widths are no multiples of 3, so RGB data rounds them up.
TINY = {
    "baseline": {},
    "pixelcnn": {"channels": 8, "layers": 1},
    "gated_pixelcnn": {"channels": 4, "layers": 1},
    "pixelrnn_row": {"hidden": 4, "layers": 1},
    "pixelrnn_diag": {"hidden": 4, "layers": 1},
    "vae": {"hidden": 8, "latent_dim": 2},
    "ae": {"hidden": 8, "latent_dim": 2},
    "aae": {"hidden": 8, "latent_dim": 2, "disc_hidden": 8},
    "gan": {"g_hidden": [16], "d_hidden": [16], "z_dim": 4},
    "dcgan": {"g_channels": 8, "d_channels": 8, "z_dim": 4},
    "infogan": {"g_channels": 4, "d_channels": 4, "z_dim": 2, "q_hidden": 8},
    # One step per resolution: the last steps train at the full 28x28 (7, 14, 28) or 32x32.
    "progan": {"g_channels": 8, "d_channels": 8, "z_dim": 4, "stage_steps": 1, "fade_steps": 0},
    "text2image": {"g_channels": 4, "d_channels": 4, "z_dim": 2, "embed_dim": 4, "text_dim": 4},
    "puzzlegan": {"g_channels": 4, "d_channels": 4, "z_dim": 2},
    "cyclegan": {"g_channels": 4, "d_channels": 4, "res_blocks": 1},
    "stargan": {"g_channels": 4, "d_channels": 4, "res_blocks": 1},
}
STEPS = 4


def write_mnist(root: Path) -> None:
    """MNIST's four IDX files: 60 training images (6 per class) and 20 test images, each a
    bright square whose place depends on the class, on noise."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for image, k in zip(images, labels, strict=True):
            image[2 + 2 * k : 10 + 2 * k, 4:24] = 230
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def write_rgb_folder(root: Path) -> None:
    """40 RGB 32x32 PNG images in two class folders (reddish and bluish noise)."""
    rng = np.random.default_rng(1)
    for k, name in enumerate(("reds", "blues")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            a = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
            a[..., 0 if k == 0 else 2] += 120
            Image.fromarray(a, "RGB").save(root / name / f"{i:02d}.png")


def rulers(split: Split, folder: Path) -> Protocol:
    """A one-epoch classifier of the classes, and of (domain, class) pairs: the protocol."""
    cfg = clf.ClassifierConfig(epochs=1, features=16)
    m = split.meta
    net = clf.train_classifier(split.train_x, split.train_y, m.levels, m.n_classes, cfg)
    torch.save(clf.classifier_checkpoint(net, cfg), folder / "classes.pt")
    d = split.domains
    joint = d.train_d * m.n_classes + d.train_y
    net = clf.train_classifier(d.train_x, joint, m.levels, len(d.names) * m.n_classes, cfg)
    torch.save(clf.classifier_checkpoint(net, cfg), folder / "domains.pt")
    return Protocol(
        classifier=folder / "classes.pt",
        domain_classifier=folder / "domains.pt",
        n_samples=N,
        iwae_k=2,
        batch_size=N,
        kid_subset_size=10,
        n_boot=2,
        reference_draws=1,
    )


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> tuple[Split, Protocol]:
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root)
    split = load(DataConfig(name="mnist", root=str(root)))  # captions auto, typeset domains
    return split, rulers(split, root)


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> tuple[Split, Protocol]:
    root = tmp_path_factory.mktemp("rgb")
    write_rgb_folder(root / "images")
    split = load(DataConfig(name="image_folder", root=str(root / "images")))
    return split, rulers(split, root)


def saved_samples(model, split: Split, n: int) -> dict[str, torch.Tensor]:
    """What the sample stage saves: `n` images drawn under the model's sampling conditions."""
    g = torch.Generator().manual_seed(0)
    conds = model.condition.sampling_conditions(model, split, n, g)
    saved = {"images": draw(model, n, g, conds, n, "cpu")}
    if conds is not None:
        fields = ("labels", "sources", "targets", "source_domains")
        saved.update({k: getattr(conds, k) for k in fields if getattr(conds, k) is not None})
    return saved


@pytest.mark.parametrize("data", ["mnist", "rgb_folder"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_samples_and_is_evaluated_at_the_data_s_own_size(
    name, data, request, tmp_path
):
    split, protocol = request.getfixturevalue(data)
    c, h, w = split.meta.shape
    assert (c, h, w) == ((1, 28, 28) if data == "mnist" else (3, 32, 32))
    torch.manual_seed(0)
    model = build(name, {**TINY[name], "steps": STEPS, "batch_size": 8}, split.meta)
    x, y = model.condition.training_data(model, split)
    path = tmp_path / "model.pt"
    result = train(model, x, y, progress=False, log_every=1, checkpoint=path)
    assert result.steps == (STEPS if model.phases else 0)
    # What the sample and evaluate stages do: the model rebuilt from its checkpoint alone.
    ckpt = load_checkpoint(path)
    for key, (_, used, _) in model.adjusted.items():
        assert ckpt["config"][key] == used
    model = model_from_checkpoint(ckpt, "cpu")
    n = N_AUTOREGRESSIVE if model.family == "autoregressive" else N
    saved = saved_samples(model, split, n)
    images = saved["images"]
    assert images.shape == (n, c, h, w) and images.dtype == torch.uint8
    assert int(images.max()) < split.meta.levels
    out = evaluate_model(model, split, saved, protocol, seed=0)
    assert math.isfinite(out["fid"]) and 0 <= out["precision"] <= 1
    if model.capabilities.likelihood is not None:
        assert math.isfinite(out["bpd"]) and out["bpd"] > 0


@pytest.mark.parametrize(
    "name, key, multiple", [("pixelcnn", "channels", 6), ("pixelrnn_row", "hidden", 3)]
)
def test_a_width_rgb_cannot_split_is_rounded_up_and_the_run_records_both(name, key, multiple):
    rgb = DataMeta("rgb", 3, 8, 8, levels=256, n_classes=2)
    model = build(name, {key: 64}, rgb)
    used = -(-64 // multiple) * multiple
    assert getattr(model.cfg, key) == used and used != 64
    params = used_params({name: {key: 64, "lr": 0.1}, f"model.{key}": 64}, name, model)
    assert params[name] == {key: used, "lr": 0.1} and params[f"model.{key}"] == used
    why = f"a multiple of {multiple} for 3-channel data"
    assert params["adjusted"] == {key: f"64 -> {used} ({why})"}
    gray = build(name, {key: 64}, DataMeta("gray", 1, 8, 8, levels=256, n_classes=2))
    assert getattr(gray.cfg, key) == 64 and gray.adjusted == {}


@pytest.mark.parametrize("size, start", [(28, 7), (32, 4), (12, 6), (8, 4)])
def test_dcgan_and_progan_start_from_the_size_halved_while_it_stays_whole(size, start):
    meta = DataMeta("any", 1, size, size, levels=256, n_classes=10)
    dcgan = build("dcgan", TINY["dcgan"], meta)
    first = dcgan.generator_net[1]  # the transposed conv from the noise vector
    assert tuple(first.kernel_size) == (start, start)
    progan = build("progan", TINY["progan"], meta)
    assert progan.start == start and progan.start * 2 ** (progan.n_stages - 1) == size


# The parameter counts of every model on 8x8 digits with the committed params, from the code
# before sizes followed the data: that default must build exactly the same nets.
DIGITS_PARAMS = {
    "baseline": 1088,
    "pixelcnn": 75665,
    "gated_pixelcnn": 117649,
    "pixelrnn_row": 46545,
    "pixelrnn_diag": 55249,
    "vae": 125969,
    "ae": 109569,
    "aae": 97978,
    "gan": 339265,
    "dcgan": 331586,
    "infogan": 220718,
    "progan": 262403,
    "text2image": 144866,  # with a 22-word vocabulary
    "puzzlegan": 180290,
    "cyclegan": 516632,
    "stargan": 1016015,
}


def test_the_digits_default_builds_the_same_nets_and_selects_all_16_models():
    p = load_params(ROOT / "params.yaml")
    meta = expected_meta(p.data)
    meta.extra["domains"] = ["handwritten", *p.data.typeset_styles]
    meta.extra["vocab"] = ["<pad>", "<unk>", *(f"w{i}" for i in range(20))]
    counts = {n: count_params(build(n, p.model_section(n), meta)) for n in MODELS}
    assert counts == DIGITS_PARAMS
    chosen = select(p)
    assert chosen.models == list(MODELS) and chosen.left_out == {}


def rgb_params(tmp_path: Path, **data) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(name="image_folder", root=str(tmp_path / "images"), **data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_all_on_an_rgb_folder_without_domains_leaves_out_the_translation_models(tmp_path):
    chosen = select(load_params(rgb_params(tmp_path, domains="none", captions="none")))
    assert "cyclegan" not in chosen.models and "text2image" not in chosen.models
    assert len(chosen.models) == 13 and "pixelcnn" in chosen.models and "progan" in chosen.models
    assert chosen.lines() == [
        "text2image: the data has no captions (data.captions: none)",
        "cyclegan, stargan: the data has no domains (data.domains: none)",
    ]
    settings = chosen.settings("cifar10")
    assert settings["suite"] == "cifar10" and settings["left_out"].count(": the data has no") == 2


def test_a_bad_value_in_a_model_s_section_is_still_an_error_under_all(tmp_path):
    path = rgb_params(tmp_path, domains="none")
    raw = yaml.safe_load(path.read_text())
    raw["dcgan"]["g_channels"] = 0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"dcgan\.g_channels=0 must be > 0"):
        select(load_params(path))


def test_the_default_benchmark_on_an_rgb_folder_says_what_it_leaves_out(project: Path):
    write_rgb_folder(project / "data" / "raw" / "images")
    set_params(project, data={"name": "image_folder", "root": "data/raw/images", "domains": "none"})
    proc = run(["genbench", "benchmark", "--dry-run", "--seeds", "0"], project)
    assert proc.stdout.startswith("14 models x seeds 0 = 14 experiments")
    assert "text2image" in proc.stdout and "cyclegan" not in proc.stdout
    assert "left out (the data cannot serve them): cyclegan, stargan: the data has no domains" in (
        proc.stderr
    )


def test_the_report_lists_what_the_benchmark_left_out_at_its_top():
    no_captions = "text2image: the data has no captions (data.captions: none)"
    no_domains = "cyclegan, stargan: the data has no domains (data.domains: none)"
    parent = pd.Series({"params.left_out": f"{no_captions}; {no_domains}"})  # as MLflow gives it
    left_out = collection._left_out(parent)
    assert left_out == [no_captions, no_domains]
    runs = pd.DataFrame({"model": ["vae"], "seed": ["0"], "commit": ["abc"]})
    runs["feature_extractor"] = "classifier"
    bench = {"name": "b", "run_id": "r1", "status": "finished", "parts": "1"}
    c = collection.Collected(runs, {}, {}, bench, left_out=left_out)
    benchmark_line, left_line = render.header(c)[:2]
    assert benchmark_line.startswith("Benchmark `b`")
    assert left_line == (
        "Left out, as the data cannot serve them (benchmark.models: all): "
        f"{no_captions}; {no_domains}."
    )


# ----------------------------------------------------------------------------------- suites
def test_there_is_a_suite_per_bundled_data_set_each_sized_for_a_cpu_or_a_gpu():
    assert available(SUITES_DIR) == ["cifar10", "digits", "fashion_mnist", "mnist"]
    for name in available(SUITES_DIR):
        text = yaml.safe_load((SUITES_DIR / f"{name}.yaml").read_text())
        assert text["sized_for"] in ("cpu", "gpu") and text["params"]["data"]["name"] == name


def test_the_digits_suite_restates_the_committed_defaults():
    p = load_params(ROOT / "params.yaml")
    assert load_params(ROOT / "params.yaml", "digits").raw == p.raw


@pytest.mark.parametrize("suite", ["mnist", "fashion_mnist", "cifar10"])
def test_every_model_a_suite_selects_builds_at_its_data_s_size(suite):
    p = load_params(ROOT / "params.yaml", suite)
    assert p.suite == suite and p.data.name == suite and p.classifier.protocol is None
    meta = expected_meta(p.data)
    meta.extra["domains"] = ["handwritten", *p.data.typeset_styles]
    meta.extra["vocab"] = ["<pad>", "<unk>", "a", "b"]
    chosen = select(p)
    for name in chosen.models:
        model = build(name, p.model_section(name), meta)
        assert model.adjusted == {}, f"{suite}: {name}'s widths should fit the data as written"
    domains = p.data.domains != "none"
    assert ("cyclegan" in chosen.models) == domains and len(chosen.models) == 14 + 2 * domains


def test_an_image_folder_takes_the_closest_suite_and_keeps_its_own_data(tmp_path):
    assert closest_suite({"name": "image_folder"}) == "cifar10"
    assert closest_suite({"name": "image_folder", "channels": 1, "image_size": 28}) == "mnist"
    assert closest_suite({"name": "image_folder", "channels": 1, "image_size": 8}) == "digits"
    assert closest_suite({"name": "mixture"}) == "digits"
    p = load_params(rgb_params(tmp_path, domains="none"), "auto")
    assert p.suite == "cifar10" and p.data.name == "image_folder" and p.data.domains == "none"
    assert p.classifier.protocol is None and p.raw["pixelcnn"]["channels"] == 192


def test_an_unknown_suite_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match="--suite='svhn' is not a suite; choose one of: cifar10"):
        load_params(ROOT / "params.yaml", "svhn")


@pytest.mark.slow
def test_a_suite_is_what_the_benchmark_s_stages_read_and_params_yaml_is_put_back(
    reproduced: Path, tmp_path: Path, monkeypatch
):
    suites = tmp_path / "suites"
    suites.mkdir()
    recipe = {"description": "tiny", "sized_for": "cpu", "params": {"baseline": {"alpha": 0.25}}}
    (suites / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(presets, "SUITES_DIR", suites)
    monkeypatch.chdir(reproduced)  # prepare, classifier and reference are done there
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = (reproduced / "params.yaml").read_bytes()
    args = ["benchmark", "--suite", "tiny", "--models", "baseline", "--seeds", "0", "--jobs", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (reproduced / "params.yaml").read_bytes() == before
    param = "select p.value from params p join tags t on t.run_uuid = p.run_uuid where "
    trained = query(reproduced, param + "t.key = 'model' and p.key = 'baseline.alpha'")
    assert trained == [("0.25",)]  # the experiment's stages read the suite's value
    assert query(reproduced, param + "t.key = 'mlflow.runName' and p.key = 'suite'") == [("tiny",)]
