"""Data for conditional models: captions, typeset-digit domains, the user layouts (captions file,
CycleGAN folders, a folder per domain, an attribute CSV) and the conditions each kind is given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen.captions import (
    CaptionError,
    build_vocab,
    detokenize,
    measure,
    read_captions_file,
    tokenize,
)
from gen.conditions.caption import KIND as CAPTION
from gen.conditions.domain import KIND as DOMAIN
from gen.conditions.none import KIND as NONE
from gen.config import ConfigError, from_dict
from gen.data import DataConfig, DataMeta, load_split, save_split
from gen.datasets import load
from gen.domains import (
    DomainError,
    attribute_csv,
    cyclegan_folder,
    domain_folders,
    render_typeset,
)
from gen.models.base import GenerativeModel

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ---------------------------------------------------------------------------------- captions
def test_every_digit_caption_names_its_digit_and_says_more_than_the_class(digits):
    captions = detokenize(digits.train_caption, digits.meta.extra["vocab"])
    assert len(captions) == len(digits.train_x)
    for caption, label in zip(captions, digits.train_y.tolist(), strict=True):
        words = caption.split()
        assert words[0] == "a" and NUMBERS[label] in words
    # Thickness, slant and size words split each class: many more distinct captions than classes.
    assert len(set(captions)) > 100
    for word in ("thick", "thin", "leaning", "left", "right", "upright", "small", "large"):
        assert word in digits.meta.extra["vocab"]


def test_slant_words_follow_the_measured_slant():
    # A stroke whose top lies to the right leans right: positive slant.
    right = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    for r in range(8):
        right[0, 0, r, 7 - r] = 16
    assert measure(right)[0, 1] > 0
    assert measure(right.flip(-1))[0, 1] < 0
    upright = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    upright[0, 0, :, 3] = 16
    assert measure(upright)[0, 1].abs() < 1e-9


def test_thicker_strokes_measure_more_ink():
    thin = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    thin[0, 0, :, 3] = 16
    thick = thin.clone()
    thick[0, 0, :, 4] = 16
    assert measure(thick)[0, 0] > measure(thin)[0, 0]


def test_test_captions_use_training_thresholds_and_vocabulary(digits):
    vocab = digits.meta.extra["vocab"]
    assert digits.test_caption.shape[0] == len(digits.test_x)
    assert int(digits.test_caption.max()) < len(vocab)
    assert 1 not in digits.test_caption.tolist()  # no unknown words in the built-in captions


def test_tokenize_pads_with_zero_and_marks_unknown_words():
    vocab = build_vocab(["a thick seven", "a thin one"])
    assert vocab[:2] == ["<pad>", "<unk>"]
    tokens = tokenize(["a seven", "a purple seven leaning"], vocab)
    assert tokens.shape == (2, 4) and tokens.dtype == torch.int64
    assert tokens[0, 2:].tolist() == [0, 0]
    assert tokens[1, 1] == 1 and tokens[1, 3] == 1  # "purple" and "leaning" are unknown
    assert detokenize(tokens[:1], vocab) == ["a seven"]


def write_images(folder: Path, n: int, value: int, size: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = np.full((size, size), value, dtype=np.uint8)
        arr[i % size, :] = 255 - value
        p = folder / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_image_folder_reads_one_caption_per_image_from_a_jsonl_file(tmp_path):
    root = tmp_path / "images"
    files = write_images(root / "cats", 5, 10) + write_images(root / "dogs", 5, 200)
    lines = [
        json.dumps({"file": p.relative_to(root).as_posix(), "caption": f"a {p.parent.name} no {i}"})
        for i, p in enumerate(files)
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(
        name="image_folder",
        root=str(root),
        channels=1,
        image_size=8,
        captions=str(tmp_path / "captions.jsonl"),
        domains="none",
    )
    split = load(cfg)
    vocab = split.meta.extra["vocab"]
    written = {f"a {p.parent.name} no {i}" for i, p in enumerate(files)}
    train = detokenize(split.train_caption, vocab)
    assert len(set(train)) == 7 and set(train) <= written  # 8 minus 1 held out (validation)
    # Words first seen in test captions are unknown to the vocabulary of the training captions.
    assert all(t.endswith("<unk>") for t in detokenize(split.test_caption, vocab))
    # The caption of each image is the one written for it: its class word matches its label.
    for caption, label in zip(train, split.train_y.tolist(), strict=True):
        assert ["cats", "dogs"][label] in caption


def test_captions_file_missing_an_image_is_a_one_line_error(tmp_path):
    root = tmp_path / "images"
    files = write_images(root, 3, 0)
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"file": "img0.png", "caption": "x"}) + "\n")
    with pytest.raises(CaptionError, match="no caption for 2 image"):
        read_captions_file(path, root, files)
    path.write_text("not json\n")
    with pytest.raises(CaptionError, match=r"c.jsonl:1 is not a JSON object"):
        read_captions_file(path, root, files)
    with pytest.raises(CaptionError, match="not found"):
        read_captions_file(tmp_path / "nope.jsonl", root, files)


def test_a_captions_file_needs_an_image_folder():
    with pytest.raises(ConfigError, match="captions file goes with data set 'image_folder'"):
        from_dict(DataConfig, "data", {"captions": "caps.jsonl"})


# ----------------------------------------------------------------------------------- domains
def test_digits_come_with_handwritten_and_typeset_domains_of_the_same_format(digits):
    d = digits.domains
    assert d.names == ["handwritten", "bold", "serif"]
    assert digits.meta.extra["domains"] == d.names
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape[1:] == (1, 8, 8)
    assert int(d.train_x.max()) <= 16
    for k in range(3):  # as many images per domain as handwritten ones, same labels
        assert int((d.train_d == k).sum()) == len(digits.train_x)
        assert torch.equal(d.train_y[d.train_d == k], digits.train_y)
    assert torch.equal(d.train_x[d.train_d == 0], digits.train_x)  # domain 0 is the data set
    assert torch.equal(d.test_x[d.test_d == 0], digits.test_x)


def test_typeset_digits_are_jittered_renders_not_copies():
    labels = torch.tensor([7] * 20)
    x = render_typeset(labels, 8, 17, style="serif", seed=0)
    assert x.shape == (20, 1, 8, 8) and x.dtype == torch.uint8
    assert len({bytes(im.numpy()) for im in x}) > 10  # fonts and affine jitter vary
    assert torch.equal(x, render_typeset(labels, 8, 17, style="serif", seed=0))
    assert x.float().mean() > 1  # there is ink


def test_typeset_rendering_fits_any_size_levels_and_channels():
    x = render_typeset(torch.arange(10), 16, 256, channels=3, style="bold")
    assert x.shape == (10, 3, 16, 16) and int(x.max()) > 200
    b = render_typeset(torch.arange(10), 8, 2)
    assert set(b.unique().tolist()) <= {0, 1}


def test_saved_split_keeps_captions_and_domains(digits, tmp_path):
    save_split(digits, tmp_path / "prep")
    back = load_split(tmp_path / "prep")
    assert torch.equal(back.train_caption, digits.train_caption)
    assert back.domains.names == digits.domains.names
    assert torch.equal(back.domains.test_x, digits.domains.test_x)
    assert torch.equal(back.domains.train_d, digits.domains.train_d)


def test_cyclegan_layout_gives_domains_a_and_b(tmp_path):
    for sub, value, n in (("trainA", 0, 4), ("trainB", 255, 3), ("testA", 0, 2), ("testB", 255, 2)):
        write_images(tmp_path / sub, n, value, size=12)
    d = cyclegan_folder(tmp_path, size=8, channels=1, levels=17)
    assert d.names == ["A", "B"]
    assert d.train_x.shape == (7, 1, 8, 8) and d.train_d.tolist() == [0] * 4 + [1] * 3
    assert d.test_d.tolist() == [0, 0, 1, 1]
    assert int(d.train_x.max()) <= 16  # read in the main data's levels
    assert d.train_x[d.train_d == 0].float().mean() < d.train_x[d.train_d == 1].float().mean()


def test_cyclegan_layout_missing_a_folder_names_it(tmp_path):
    for sub in ("trainA", "trainB", "testA"):
        write_images(tmp_path / sub, 2, 0)
    with pytest.raises(DomainError, match="'testB/' has none"):
        cyclegan_folder(tmp_path, 8, 1, 17)


def test_a_folder_per_domain_names_domains_by_folder(tmp_path):
    for name, value in (("blond", 250), ("black", 5), ("brown", 120)):
        write_images(tmp_path / name, 10, value)
    d = domain_folders(tmp_path, 8, 3, 256, test_fraction=0.2)
    assert d.names == ["black", "blond", "brown"]
    assert d.train_x.shape[1:] == (3, 8, 8)
    assert len(d.train_x) + len(d.test_x) == 30
    assert sorted(d.test_d.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified by domain


def test_attribute_csv_puts_each_image_in_its_one_domain(tmp_path):
    files = write_images(tmp_path / "img", 8, 0)
    rows = ["file,smiling,serious"] + [
        f"img/{p.name},{i % 2},{1 - i % 2}" for i, p in enumerate(files)
    ]
    (tmp_path / "attributes.csv").write_text("\n".join(rows) + "\n")
    d = attribute_csv(tmp_path, 8, 1, 256, test_fraction=0.25)
    assert d.names == ["smiling", "serious"]
    assert len(d.train_x) == 6 and sorted(d.test_d.tolist()) == [0, 1]


def test_attribute_csv_rows_must_set_exactly_one_attribute(tmp_path):
    write_images(tmp_path / "img", 2, 0)
    (tmp_path / "attributes.csv").write_text("file,a,b\nimg/img0.png,1,1\nimg/img1.png,0,1\n")
    with pytest.raises(DomainError, match=r"attributes.csv:2: an image needs exactly one"):
        attribute_csv(tmp_path, 8, 1, 256, 0.5)


def test_unknown_domain_source_or_style_is_a_config_error():
    with pytest.raises(ConfigError, match="data.domains='zebras' is not allowed"):
        from_dict(DataConfig, "data", {"domains": "zebras"})
    with pytest.raises(ConfigError, match="unknown style 'gothic'"):
        from_dict(DataConfig, "data", {"typeset_styles": ["gothic"]})


# -------------------------------------------------------------------------------- conditions
class Kind(GenerativeModel):
    """Just enough of a model to ask its condition kind for data."""

    name = "probe"

    def __init__(self, condition, meta: DataMeta, domain_ids=None) -> None:
        super().__init__(None, meta)
        self.condition = condition
        if domain_ids is not None:
            self.domain_ids = domain_ids


def training_data(model, split):
    return model.condition.training_data(model, split)


def sampling_conditions(model, split, n, generator):
    return model.condition.sampling_conditions(model, split, n, generator)


def test_each_condition_kind_trains_on_its_own_pairs(digits):
    x, y = training_data(Kind(NONE, digits.meta), digits)
    assert y is digits.train_y
    x, y = training_data(Kind(CAPTION, digits.meta), digits)
    assert x is digits.train_x and y is digits.train_caption
    x, y = training_data(Kind(DOMAIN, digits.meta, domain_ids=[0, 2]), digits)
    assert set(y.tolist()) == {0, 2} and len(x) == 2 * len(digits.train_x)


def test_translation_conditions_go_from_a_source_to_another_domain(digits):
    g = torch.Generator().manual_seed(0)
    c = sampling_conditions(Kind(DOMAIN, digits.meta), digits, 500, g)
    x, targets = c.value
    assert x.shape == (500, 1, 8, 8) and torch.equal(targets, c.targets)
    assert (c.targets != c.source_domains).all()
    assert set(c.targets.tolist()) == {0, 1, 2}
    # Labels are the digits of the source images.
    d = digits.domains
    lookup = {bytes(im.numpy()): int(lbl) for im, lbl in zip(d.test_x, d.test_y, strict=True)}
    assert all(lookup[bytes(im.numpy())] == int(lbl) for im, lbl in zip(x, c.labels, strict=True))


def test_caption_conditions_cycle_through_every_test_caption(digits):
    g = torch.Generator().manual_seed(0)
    n = len(digits.test_x)
    c = sampling_conditions(Kind(CAPTION, digits.meta), digits, 2 * n, g)
    assert c.value.shape == (2 * n, digits.test_caption.shape[1])
    assert torch.equal(c.labels.bincount(), 2 * digits.test_y.bincount())


def test_a_caption_model_on_data_without_captions_says_how_to_get_them(digits):
    from dataclasses import replace

    bare = replace(digits, train_caption=None, test_caption=None, domains=None)
    with pytest.raises(ConfigError, match="needs captions but the data set has none"):
        training_data(Kind(CAPTION, digits.meta), bare)
    with pytest.raises(ConfigError, match="needs domains but the data set has none"):
        training_data(Kind(DOMAIN, digits.meta), bare)
