"""The DINOv2 feature space from a local weights file: the network against a hand-written
forward pass, the official checkpoint format, the one-line error for missing weights, and the
whole path offline (reference, evaluate, report) on a small file in that format: its own
fingerprint, its own tables and charts. The numbers of a random network mean nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import genbench, query, set_params

from gen import dinov2
from gen.features import extract
from gen.metrics import MetricError
from pipeline import provenance, report, stages, tracking
from pipeline.cli import main
from pipeline.params import load_params

S14 = "dinov2-vit-s-14-local"


def official_state_dict(width=64, depth=2, grid=37, patch=14, swiglu=False, seed=0):
    """Random tensors under the key names and shapes of facebookresearch/dinov2's
    `dinov2_vit*14_pretrain.pth` (written out here, not taken from gen/dinov2.py): its
    DinoVisionTransformer with img_size 518 (a 37 x 37 patch grid), LayerScale and
    block_chunks=0. ViT-S/14 is width 384, depth 12; these are smaller."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": t(1, 1, width),
        "pos_embed": t(1, 1 + grid * grid, width),
        "mask_token": t(1, width),
        "patch_embed.proj.weight": t(width, 3, patch, patch, scale=0.02),
        "patch_embed.proj.bias": t(width),
        "norm.weight": 1 + t(width),
        "norm.bias": t(width),
    }
    hidden = (int(4 * width * 2 / 3) + 7) // 8 * 8 if swiglu else 4 * width
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": 1 + t(width),
            b + "norm1.bias": t(width),
            b + "attn.qkv.weight": t(3 * width, width),
            b + "attn.qkv.bias": t(3 * width),
            b + "attn.proj.weight": t(width, width),
            b + "attn.proj.bias": t(width),
            b + "ls1.gamma": 1 + t(width),
            b + "norm2.weight": 1 + t(width),
            b + "norm2.bias": t(width),
            b + "ls2.gamma": 1 + t(width),
        }
        if swiglu:
            sd |= {
                b + "mlp.w12.weight": t(2 * hidden, width),
                b + "mlp.w12.bias": t(2 * hidden),
                b + "mlp.w3.weight": t(width, hidden),
                b + "mlp.w3.bias": t(width),
            }
        else:
            sd |= {
                b + "mlp.fc1.weight": t(hidden, width),
                b + "mlp.fc1.bias": t(hidden),
                b + "mlp.fc2.weight": t(width, hidden),
                b + "mlp.fc2.bias": t(width),
            }
    return sd


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official_state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def no_hub_cache(tmp_path: Path, monkeypatch):
    """torch.hub's cache is this test's own empty folder: a real file there changes nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def by_hand(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DINOv2's forward pass written out op by op: patches, CLS, position embeddings
    interpolated with scale factors (grid + 0.1) / 37, pre-norm blocks with LayerScale and
    64-channel heads (softmax(q k^T / 8) v), then the final LayerNorm's CLS token."""
    n, width = len(x), sd["cls_token"].shape[-1]
    heads = width // 64
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    rows, cols = tokens.shape[-2:]
    grid = sd["pos_embed"][:, 1:].reshape(1, 37, 37, width).permute(0, 3, 1, 2)
    scale = ((rows + 0.1) / 37, (cols + 0.1) / 37)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic")
    pos = torch.cat([sd["pos_embed"][:, :1], grid.flatten(2).mT], 1)
    h = torch.cat([sd["cls_token"].expand(n, 1, width), tokens.flatten(2).mT], 1) + pos

    def norm(v, name):
        return F.layer_norm(v, (width,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)

    def linear(v, name):
        return F.linear(v, sd[name + ".weight"], sd[name + ".bias"])

    for i in range(sum(k.endswith(".norm1.weight") for k in sd)):
        b = f"blocks.{i}."
        qkv = linear(norm(h, b + "norm1"), b + "attn.qkv").reshape(n, -1, 3, heads, 64)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        a = (torch.softmax(q @ k.mT / 8.0, dim=-1) @ v).transpose(1, 2).reshape(n, -1, width)
        h = h + sd[b + "ls1.gamma"] * linear(a, b + "attn.proj")
        m = linear(F.gelu(linear(norm(h, b + "norm2"), b + "mlp.fc1")), b + "mlp.fc2")
        h = h + sd[b + "ls2.gamma"] * m
    return norm(h, "norm")[:, 0]


# ------------------------------------------------------------------------------ the network
def test_the_network_is_dinov2s_forward_pass_written_out_by_hand(tmp_path: Path):
    sd = official_state_dict(width=128, depth=2)  # two heads
    torch.save(sd, tmp_path / "w.pth")
    net = dinov2.load_vit(tmp_path / "w.pth")  # strict: every official key, nothing else
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours, expected = net(x), by_hand(sd, x)
    assert ours.shape == (2, 128)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_the_size_is_read_from_the_file():
    assert dinov2.shape_of(official_state_dict(width=128, depth=3)) == dinov2.Shape(
        width=128, depth=3, patch=14, grid=37, ffn="mlp", hidden=512
    )
    g = dinov2.shape_of(official_state_dict(width=64, depth=1, swiglu=True))  # ViT-g's FFN
    assert (g.ffn, g.hidden) == ("swiglu", 176)  # dinov2: (int(256 * 2 / 3) + 7) // 8 * 8
    with pytest.raises(ValueError, match="not a DINOv2 ViT state dict"):
        dinov2.shape_of({"weight": torch.zeros(3)})


def test_a_vit_g_file_loads_with_its_swiglu_feed_forward(tmp_path: Path):
    torch.save(official_state_dict(width=64, depth=1, swiglu=True), tmp_path / "g.pth")
    with torch.no_grad():
        out = dinov2.load_vit(tmp_path / "g.pth")(torch.randn(1, 3, 28, 42))
    assert out.shape == (1, 64) and torch.isfinite(out).all()


def test_position_embeddings_stay_as_stored_on_their_own_grid_and_interpolate_elsewhere():
    net = dinov2.ViT(dinov2.Shape(64, 1, 14, 37, "mlp", 256))
    torch.nn.init.normal_(net.pos_embed)
    assert net.position_embeddings(37, 37) is net.pos_embed  # 518 px: no interpolation
    assert net.position_embeddings(16, 16).shape == (1, 1 + 16 * 16, 64)  # 224 px
    with torch.no_grad():
        net.pos_embed[:, 1:] = torch.arange(64.0)  # the same vector at every patch
    flat = net.position_embeddings(16, 12)  # bicubic keeps a constant a constant
    torch.testing.assert_close(flat[0, 1:], torch.arange(64.0).expand(16 * 12, 64))
    torch.testing.assert_close(flat[0, 0], net.pos_embed[0, 0])  # CLS's is never resized


# ---------------------------------------------------------------- the weights, the extractor
def test_missing_weights_say_in_one_line_which_file_to_download_and_where(tmp_path: Path):
    for given in (None, tmp_path / "nowhere.pth"):
        with pytest.raises(MetricError) as info:
            dinov2.weights_file(S14, given)
        text = str(info.value)
        assert "\n" not in text
        url = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
        assert url in text and "eval.feature_weights" in text
        assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in text


def test_unreadable_weights_and_files_holding_objects_are_refused(tmp_path: Path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    torch.save({"cls_token": torch.zeros(1), "extra": Path("x")}, tmp_path / "objects.pth")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    for name in ("notes.pth", "objects.pth", "other.pth"):
        with pytest.raises(MetricError, match="cannot read .*download https://"):
            dinov2.weights_file(S14, tmp_path / name)


def test_the_file_of_another_official_size_is_refused_naming_its_own_extractor(
    weights, monkeypatch
):
    """(An official ViT-B file is 346 MB: a small "official" size stands in for it.)"""
    monkeypatch.setitem(dinov2.MODELS, "dinov2-vit-t-14-local", dinov2.Official("t14", 64, 2))
    with pytest.raises(MetricError, match="holds the t14 weights .* dinov2-vit-t-14-local"):
        dinov2.weights_file(S14, weights)
    assert dinov2.weights_file("dinov2-vit-t-14-local", weights) == weights


def test_torch_hubs_cache_is_where_a_file_is_found_without_a_path(tmp_path: Path, weights):
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / weights.name).write_bytes(weights.read_bytes())
    assert dinov2.weights_file(S14, None) == cache / weights.name


def test_the_extractor_is_torch_fidelitys_dinov2_preprocessing_on_grayscale(weights):
    """Through torch-fidelity's registry: one channel repeated to RGB, levels to 0..255,
    TF1-compatible bilinear resize to 224, ImageNet normalisation, no class logits."""
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    x = torch.randint(0, 17, (3, 1, 8, 8), dtype=torch.uint8)
    f = extract(x, 17, S14, weights, batch_size=2)
    assert f.features.shape == (3, 64) and f.features.dtype == torch.float64
    assert f.logits is None
    rgb = (x.float() * 255 / 16).round().expand(-1, 3, -1, -1)
    y = interpolate_bilinear_2d_like_tensorflow1x(rgb, size=(224, 224), align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        expected = by_hand(torch.load(weights), (y - mean) / std)
    torch.testing.assert_close(f.features.float(), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------- the pipeline, offline
SMALL_DATA = {"name": "mixture", "n_train": 100, "n_test": 40, "domains": "none"}


def stage(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_dinov2_space_end_to_end_offline_its_own_fingerprint_and_tables(
    prepared: Path, weights: Path
):
    """A model scored in the classifier's space, then in DINOv2's from a local file: another
    protocol fingerprint (the file's hash in it), no IS (DINOv2 has no classes, and the
    classifier space's IS does not stay in the run), its own data row, tables and chart."""
    set_params(prepared, model="baseline", data=SMALL_DATA, eval={"batch_size": 100})
    stages.prepare(load_params())
    stages.train_classifier(load_params())  # in-process: `genbench classifier` starts one
    for name in ("train", "sample", "evaluate"):
        genbench(name)
    before = json.loads(Path("metrics.json").read_text())
    assert before["feature_extractor"] == "classifier" and before["is_mean"] is not None

    set_params(prepared, eval={"feature_extractor": S14})  # no file: one line, nothing written
    written = {f: Path(f).read_bytes() for f in ("metrics.json", "runs/reference.json")}
    runs = query(prepared, "select count(*) from runs")
    for name in ("reference", "evaluate"):
        code, out = stage(name)
        assert code == 2 and out.startswith("Error: dinov2-vit-s-14-local: no weights file")
        assert "dinov2_vits14_pretrain.pth" in out and len(out.strip().splitlines()) == 1
    assert {f: Path(f).read_bytes() for f in written} == written
    assert query(prepared, "select count(*) from runs") == runs

    set_params(prepared, eval={"feature_weights": str(weights)})
    genbench("reference")
    genbench("evaluate")
    after = json.loads(Path("metrics.json").read_text())
    assert after["feature_extractor"] == S14 and after["protocol"] != before["protocol"]
    assert after["is_mean"] is None and math.isfinite(after["fid"])
    assert after["bpd"] == before["bpd"]  # likelihood does not depend on the feature space
    run = tracking.search("mixture", "tags.model = 'baseline'").iloc[0]
    assert run["tags.protocol.feature_weights"] == provenance.file_hash(weights)
    assert math.isnan(run["metrics.is_mean"])  # the classifier space's IS is gone
    reference = json.loads(Path("runs/reference.json").read_text())
    assert list(reference["draws"]) == [S14]

    md, _ = report.build_report("mixture", Path("reports"))
    text = md.read_text()
    assert "[classifier features]" not in text
    quality = text.split(f"## Likelihood and sample quality [{S14} features]")[1].split("\n## ")[0]
    rows = [line for line in quality.splitlines() if line.startswith("| ")]
    assert rows[0] == "| model | n | bits/dim | FID | FID draw sd | KID |"  # no IS column
    assert rows[1].startswith("| data (real images) | 2 |") and rows[2].startswith("| baseline")
    assert f"FID, unconditional models [{S14}]" in text and Path("reports/figures/fid.png").exists()


def test_two_feature_spaces_in_one_report_never_share_a_table_or_chart(tmp_path, monkeypatch):
    """Translation's space beside the samples' space: each its own table, ranking and chart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spaces = {"dcgan": S14, "gan": S14, "cyclegan": f"domain-{S14}", "stargan": "classifier"}
    for seed in (0, 1):
        for model, space in spaces.items():
            family = "translation" if model in ("cyclegan", "stargan") else "adversarial"
            run_id = tracking.start_run("digits", model, family, {}, seed)
            tracking.log_metrics(run_id, {"fid": 10.0 + seed + len(model)})
            tracking.set_tags(run_id, {"feature_extractor": space, "protocol": "p"})
            tracking.finish(run_id)
    md, _ = report.build_report("digits", tmp_path / "reports", list(spaces))
    text = md.read_text()

    def models_under(title: str) -> list[str]:
        part = text.split(f"## {title}")[1].split("\n## ")[0]
        return [ln.split(" | ")[0][2:] for ln in part.splitlines()[3:] if ln.startswith("| ")]

    assert models_under(f"Likelihood and sample quality [{S14} features]") == ["dcgan", "gan"]
    assert models_under(f"Image-to-image translation [domain-{S14} features]") == ["cyclegan"]
    assert models_under("Image-to-image translation [classifier features]") == ["stargan"]
    assert f"### FID, unconditional models [{S14}]" in text
    figs = sorted(p.name for p in (tmp_path / "reports" / "figures").glob("fid*.png"))
    assert figs == [
        "fid.png",
        "fid_translation_classifier.png",
        f"fid_translation_domain-{S14}.png",
    ]
