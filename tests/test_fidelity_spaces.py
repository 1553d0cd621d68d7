"""torch-fidelity's other feature spaces (VGG16, CLIP) from local weights files: the figures
are torch-fidelity's own extractor on the same file, grayscale goes in as RGB, and a missing
or unreadable file, or a failed download, is one line saying which file to fetch. A CLIP file
is OpenAI's TorchScript archive; the one written here is small and random, so its numbers mean
nothing: the plumbing is what is tested."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from gen.features import CLIP, EXTRACTORS, extract
from gen.metrics import MetricError
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    """A small CLIP ViT in OpenAI's format: a TorchScript archive whose state dict holds
    `visual.*` and `text_projection` (torch-fidelity reads the sizes from the tensors)."""
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    torch.manual_seed(0)

    class Archive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # embed 16, an 8x8 input (patch 4 on a 2x2 grid), one block of width 64 (one head)
            self.visual = CLIPVisual(16, 8, 1, 64, 4).visual
            self.text_projection = nn.Parameter(torch.randn(8, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path_factory.mktemp("clip") / "clip-vit-b-32.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated; OpenAI's files are in it
        torch.jit.save(torch.jit.script(Archive()), path)
    return path


def test_clip_features_are_torch_fidelitys_own_extractor_on_the_same_file(clip_file: Path):
    from torch_fidelity.utils import create_feature_extractor

    x = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    f = extract(x, 17, "clip-vit-b-32", clip_file, batch_size=2)
    assert f.features.shape == (5, 16) and f.features.dtype == torch.float64
    assert f.logits is None  # no classes in CLIP's space: the Inception score is n/a there
    fe = create_feature_extractor(
        "clip-vit-b-32", ["clip"], cuda=False, feature_extractor_weights_path=str(clip_file)
    )
    rgb = (x.float() * 255 / 16).round().to(torch.uint8).expand(-1, 3, -1, -1)
    with torch.no_grad():
        (expected,) = fe(rgb)
    torch.testing.assert_close(f.features.float(), expected, rtol=1e-5, atol=1e-5)


def test_every_clip_name_and_vgg16_are_extractors_params_accept(tmp_path: Path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in ("vgg16", *CLIP):
        assert name in EXTRACTORS
        raw["eval"]["feature_extractor"] = name
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        assert load_params(tmp_path / "params.yaml").eval.feature_extractor == name


@pytest.mark.parametrize(
    "name, url",
    [
        ("vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth"),
        ("clip-vit-b-32", "https://openaipublic.azureedge.net/clip/models/"),
        ("clip-rn50", "https://openaipublic.azureedge.net/clip/models/"),
        ("inception-v3-compat", "https://github.com/toshas/torch-fidelity/releases/"),
    ],
)
def test_a_missing_weights_file_is_one_line_naming_the_official_one(tmp_path, name, url):
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(MetricError) as info:
        extract(x, 17, name, tmp_path / "nowhere.pt")
    text = str(info.value)
    assert "\n" not in text and str(tmp_path / "nowhere.pt") in text
    assert url in text and "eval.feature_weights" in text


def test_an_unreadable_file_and_a_failed_download_are_one_line(tmp_path, monkeypatch):
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    junk = tmp_path / "notes.pt"
    junk.write_text("not weights")
    with pytest.raises(MetricError) as info:
        extract(x, 17, "clip-vit-b-16", junk)
    assert "\n" not in str(info.value) and "clip-vit-b-16 features unavailable" in str(info.value)

    import torch_fidelity.feature_extractor_clip as fidelity_clip

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(fidelity_clip, "load_state_dict_from_url", offline)
    with pytest.raises(MetricError) as info:
        extract(x, 17, "clip-vit-b-16", None)
    text = str(info.value)
    assert "\n" not in text and "name resolution" in text
    assert fidelity_clip.MODEL_URLS["clip-vit-b-16"] in text
