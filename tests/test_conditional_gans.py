"""Text-to-image GAN (GAN-CLS) and Progressive GAN: schedules, losses, phase isolation, sampling."""

from __future__ import annotations

import pytest
import torch
from conftest import gen, snapshot, unchanged

from gen.captions import build_vocab, tokenize
from gen.config import ConfigError, from_dict
from gen.data import DataMeta
from gen.models.progan import ProGAN, schedule
from gen.models.text2image import Text2Image, matching_aware_d_loss, mismatched
from gen.trainer import train

CAPTIONS = ["a thick one", "a thin seven leaning left", "a large zero", "a small two upright"]
VOCAB = build_vocab(CAPTIONS)
META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10, extra={"vocab": VOCAB})
TINY_T2I = {"steps": 2, "batch_size": 8, "z_dim": 4, "g_channels": 8, "d_channels": 8}
TINY_T2I |= {"embed_dim": 4, "text_dim": 4}
TINY_PRO = {"steps": 2, "batch_size": 8, "z_dim": 4, "g_channels": 8, "d_channels": 8}
TINY_PRO |= {"stage_steps": 4, "fade_steps": 2}


def text2image(seed: int = 0, meta: DataMeta = META, **overrides) -> Text2Image:
    torch.manual_seed(seed)
    return Text2Image(from_dict(Text2Image.Config, "text2image", {**TINY_T2I, **overrides}), meta)


def progan(seed: int = 0, meta: DataMeta = META, **overrides) -> ProGAN:
    torch.manual_seed(seed)
    return ProGAN(from_dict(ProGAN.Config, "progan", {**TINY_PRO, **overrides}), meta)


def square(size: int) -> DataMeta:
    return DataMeta(f"tiny{size}", 1, size, size, levels=17, n_classes=10)


def images(n: int, meta: DataMeta = META, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, meta.levels, (n, *meta.shape), generator=g, dtype=torch.uint8)


def captions(n: int) -> torch.Tensor:
    return tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(n)], VOCAB)


def step(model, phase: str, x: torch.Tensor, y=None, lr: float = 1e-2) -> dict[str, torch.Tensor]:
    """One optimiser step of `phase`, exactly as the trainer does it."""
    opt = torch.optim.Adam(model.param_groups()[phase], lr=lr)
    model.zero_grad(set_to_none=True)
    terms = model.loss(x, phase, y)
    terms["loss"].backward()
    opt.step()
    return terms


def one_line_config_error(make, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    message = str(err.value)
    assert fragment in message and "\n" not in message, message


# ------------------------------------------------------------------------ fade-in schedule
@pytest.mark.parametrize(
    "step, expected",
    [
        (0, (0, 1.0)),  # the first stage has nothing to fade from
        (99, (0, 1.0)),  # its last step
        (100, (1, 0.0)),  # a new stage starts as the previous one's output, upsampled
        (110, (1, 0.25)),  # mid-fade: alpha rises linearly
        (120, (1, 0.5)),
        (139, (1, 0.975)),
        (140, (1, 1.0)),  # the end of the fade
        (199, (1, 1.0)),
        (200, (2, 0.0)),  # the last stage fades in like the others
        (220, (2, 0.5)),
        (300, (2, 1.0)),  # beyond the end the last stage stays, fully faded in
        (10**6, (2, 1.0)),
    ],
)
def test_schedule_grows_one_stage_every_stage_steps_and_fades_each_new_one_in(step, expected):
    assert schedule(step, n_stages=3, stage_steps=100, fade_steps=40) == expected


def test_schedule_without_fade_switches_at_once_and_one_stage_never_grows():
    assert schedule(100, n_stages=3, stage_steps=100, fade_steps=0) == (1, 1.0)
    assert schedule(99, n_stages=3, stage_steps=100, fade_steps=0) == (0, 1.0)
    assert schedule(500, n_stages=1, stage_steps=100, fade_steps=50) == (0, 1.0)
    # A fade as long as the stage ends exactly as the next stage begins.
    assert schedule(199, n_stages=3, stage_steps=100, fade_steps=100) == (1, 0.99)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"stage_steps": 0}, "progan.stage_steps=0 must be > 0"),
        ({"fade_steps": 5}, "progan.fade_steps=5 must be in [0, stage_steps=4]"),
        ({"fade_steps": -1}, "progan.fade_steps=-1"),
        ({"mbstd_group": 0}, "progan.mbstd_group=0 must be > 0"),
        ({"g_channels": 0}, "progan.g_channels=0 must be > 0"),
    ],
)
def test_progan_bad_schedule_or_width_is_a_one_line_config_error(override, fragment):
    one_line_config_error(lambda: progan(**override), fragment)


@pytest.mark.parametrize("h, w", [(8, 16), (2, 2)])
def test_progan_bad_image_size_is_a_one_line_config_error_naming_it(h, w):
    meta = DataMeta("odd", 1, h, w, levels=17, n_classes=10)
    one_line_config_error(lambda: progan(meta=meta), f"progan cannot take {h}x{w} images")


# ------------------------------------------------------------------------------- ProGAN
def test_progan_follows_the_schedule_through_begin_step():
    model = progan(meta=square(16))  # 3 stages: 4, 8, 16
    seen = []
    for s in (0, 3, 4, 5, 6, 8, 100):
        model.begin_step(s)
        seen.append((model.resolution, float(model.alpha)))
    assert seen == [(4, 1.0), (4, 1.0), (8, 0.0), (8, 0.5), (8, 1.0), (16, 0.0), (16, 1.0)]


@pytest.mark.parametrize("size", [4, 8, 16, 32])
def test_growing_changes_the_resolution_of_what_d_sees_from_both_sides(size):
    model = progan(meta=square(size))
    seen = []
    model.discriminator_net.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    x = images(8, square(size))
    for stage in range(model.n_stages):
        model.begin_step(stage * model.cfg.stage_steps + 1)  # mid-fade (except stage 0)
        seen.clear()
        terms = model.loss(x, "d")
        assert torch.isfinite(terms["loss"])
        side = 4 * 2**stage
        assert seen == [(8, 1, side, side)] * 2, "real and fake both at the current resolution"
        assert float(terms["resolution"]) == side


@pytest.mark.parametrize("size", [8, 16])
def test_progan_samples_have_the_data_size_at_every_stage(size):
    meta = square(size)
    model = progan(meta=meta).eval()
    for s in range(0, model.n_stages * model.cfg.stage_steps + 1):
        model.begin_step(s)
        x = model.sample(3, gen(0))
        assert x.shape == (3, *meta.shape) and x.dtype == torch.uint8
        assert int(x.max()) < meta.levels


def test_before_the_last_stage_samples_are_the_small_images_upsampled():
    model = progan(meta=square(16)).eval()
    model.begin_step(0)  # 4x4
    x = model.sample(2, gen(0))
    assert torch.equal(x, x[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3))


def test_real_images_are_pooled_and_faded_like_the_generator_output():
    model = progan(meta=square(16))
    x = torch.randn(2, 1, 16, 16)
    model.begin_step(model.cfg.stage_steps + 1)  # 8x8, alpha 0.5
    assert model.resolution == 8 and model._alpha == 0.5
    p8 = torch.nn.functional.avg_pool2d(x, 2)
    p4 = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(model.at_resolution(x), 0.5 * p4 + 0.5 * p8)
    # At alpha 0 D sees exactly the previous resolution, upsampled: as G's output is then.
    model.begin_step(model.cfg.stage_steps)
    torch.testing.assert_close(model.at_resolution(x), p4)
    z = model.sample_latent(3, gen(1))
    with torch.no_grad():
        g = model.generator_net
        small = g.to_image[0](g.first(z)).repeat_interleave(2, 2).repeat_interleave(2, 3)
        torch.testing.assert_close(g(z, 1, 0.0), small)


def test_progan_stage_is_saved_with_the_weights_and_restored_on_load():
    model = progan(meta=square(16))
    model.begin_step(5)
    other = progan(meta=square(16), seed=1)
    other.load_state_dict(model.state_dict())
    assert (other.resolution, other._alpha) == (8, 0.5)
    assert torch.equal(model.eval().sample(4, gen(0)), other.eval().sample(4, gen(0)))


def test_progan_trains_through_the_trainer_and_ends_at_the_last_stage():
    model = progan(steps=12, stage_steps=4, fade_steps=2, meta=square(16))
    x = images(16, square(16))
    result = train(model, x, seed=0, progress=False, log_every=4)
    assert result.steps == 12 and model.resolution == 16 and model._alpha == 1.0
    assert [row["d/resolution"] for row in result.history] == [4.0, 8.0, 16.0]
    assert all(torch.isfinite(torch.tensor(v)) for row in result.history for v in row.values())


def test_a_resumed_progan_run_grows_exactly_like_an_uninterrupted_one(tmp_path):
    x = images(16, square(16))
    whole = progan(steps=10, meta=square(16))
    train(whole, x, seed=0, progress=False)
    ckpt = tmp_path / "progan.pt"
    part = progan(steps=6, meta=square(16))  # stops mid-fade of the 8x8 stage
    train(part, x, seed=0, progress=False, checkpoint=ckpt)
    assert (part.resolution, part._alpha) == (8, 0.5)
    resumed = progan(steps=10, meta=square(16))
    train(resumed, x, seed=0, progress=False, checkpoint=ckpt)
    assert (resumed.resolution, resumed._alpha) == (whole.resolution, whole._alpha) == (16, 0.5)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(whole.sample(4, gen(0)), resumed.sample(4, gen(0)))


def test_progan_pixel_norm_and_equalised_weights():
    model = progan()
    conv = model.generator_net.blocks[0][0]
    # Weights are N(0, 1) parameters; He's constant is applied in forward, not at init.
    assert abs(float(conv.weight.detach().std()) - 1) < 0.2
    assert conv.scale == pytest.approx(2**0.5 / (8 * 9) ** 0.5)
    h = model.generator_net.first(torch.randn(5, 4))
    torch.testing.assert_close(h.pow(2).mean(1), torch.ones(5, 4, 4), rtol=1e-4, atol=1e-4)


def test_minibatch_std_channel_tells_a_varied_batch_from_a_collapsed_one():
    mbstd = progan().discriminator_net.last[0]
    varied = mbstd(torch.randn(8, 3, 4, 4))
    collapsed = mbstd(torch.randn(1, 3, 4, 4).expand(8, -1, -1, -1))
    assert varied.shape == (8, 4, 4, 4)
    assert float(varied[:, 3].min()) > 0.1 and float(collapsed[:, 3].max()) < 1e-3


# -------------------------------------------------------------------------- text2image
def test_text2image_needs_a_vocabulary():
    meta = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
    one_line_config_error(lambda: text2image(meta=meta), "no captions")


def test_text2image_sample_requires_a_caption_per_image():
    model = text2image().eval()
    with pytest.raises(ValueError, match="needs captions"):
        model.sample(4, gen(0))
    with pytest.raises(ValueError, match="shape"):
        model.sample(4, gen(0), captions(3))
    x = model.sample(4, gen(0), captions(4))
    assert x.shape == (4, *META.shape) and x.dtype == torch.uint8
    assert int(x.max()) < META.levels


def test_text2image_same_seed_same_samples_and_different_captions_different_images():
    model = text2image().eval()
    words = captions(4)
    assert torch.equal(model.sample(4, gen(0), words), model.sample(4, gen(0), words))
    other = words.roll(1, 0)
    with torch.no_grad():
        z = model.sample_latent(4, gen(0))
        a = model.generator_net(z, words)
        b = model.generator_net(z, other)
    assert not torch.allclose(a, b), "the same noise with another caption gives another image"


def test_text_embedding_ignores_padding_and_word_order():
    enc = text2image().generator_net.text
    ids = tokenize(["a thick one", "one thick a"], VOCAB)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(enc(ids)[0], enc(ids)[1])
        torch.testing.assert_close(enc(padded), enc(ids))


def test_matching_aware_d_loss_scores_mismatched_captions_as_fake():
    real, wrong, fake = torch.tensor([2.0, 1.0]), torch.tensor([0.5, -1.0]), torch.tensor([-3.0])
    sp = torch.nn.functional.softplus
    expected = sp(-real).mean() + 0.5 * (sp(wrong).mean() + sp(fake.expand(2)).mean())
    terms = matching_aware_d_loss(real, wrong, fake.expand(2))
    torch.testing.assert_close(terms["loss"], expected)
    assert float(terms["d_wrong"]) == pytest.approx(float(torch.sigmoid(wrong).mean()))
    # The wrong caption of each image is another image's caption.
    words = captions(4)
    assert torch.equal(mismatched(words), words[[3, 0, 1, 2]])


def test_text2image_d_loss_includes_the_mismatched_pairs():
    model = text2image()
    x = images(8)
    same = captions(1).expand(8, -1)
    # When every image has the same caption the "wrong" pairs are the real pairs.
    torch.manual_seed(0)
    terms = model.loss(x, "d", same)
    assert float(terms["d_wrong"]) == pytest.approx(float(terms["d_real"]))
    torch.manual_seed(0)
    varied = model.loss(x, "d", captions(8))
    assert float(varied["d_wrong"]) != pytest.approx(float(varied["d_real"]))


# ------------------------------------------------------------------------------- both
@pytest.mark.parametrize("which", ["text2image", "progan"])
def test_losses_are_finite_for_every_phase_and_phases_are_k_d_steps_then_g(which):
    make = text2image if which == "text2image" else progan
    model = make(d_steps=2)
    assert model.phases == ("d", "d", "g")
    d, g = model.param_groups()["d"], model.param_groups()["g"]
    assert {id(p) for p in d}.isdisjoint({id(p) for p in g})
    assert len(d) + len(g) == len(list(model.parameters()))
    y = captions(6) if which == "text2image" else None
    for s in (0, 3, 100):  # progan: first stage, mid-fade, last stage
        model.begin_step(s)
        for phase in ("d", "g"):
            terms = model.loss(images(6), phase, y)
            assert all(torch.isfinite(v).all() for v in terms.values()), (s, phase, terms)
    with pytest.raises(ValueError, match="unknown phase"):
        model.loss(images(6), "q", y)


@pytest.mark.parametrize("which", ["text2image", "progan"])
def test_a_d_step_leaves_g_bit_identical_and_a_g_step_leaves_d(which):
    make = text2image if which == "text2image" else progan
    model = make()
    model.begin_step(3)  # progan mid-fade: both resolutions' layers are in use
    x = images(8)
    y = captions(8) if which == "text2image" else None
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    step(model, "d", x, y)
    assert unchanged(g_before, model.generator_net)
    assert not unchanged(d_before, model.discriminator_net)
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    step(model, "g", x, y)
    assert unchanged(d_before, model.discriminator_net)
    assert not unchanged(g_before, model.generator_net)


def test_text2image_trains_on_caption_pairs_through_the_trainer(digits):
    split = digits
    model = text2image(meta=split.meta, steps=3)
    training_data = model.condition.training_data
    sampling_conditions = model.condition.sampling_conditions

    x, y = training_data(model, split)
    result = train(model, x, y, seed=0, progress=False, log_every=1)
    assert result.steps == 3 and "d/d_wrong" in result.history[-1]
    conds = sampling_conditions(model, split, 5, gen(0))
    out = model.sample(5, gen(0), conds.value)
    assert out.shape == (5, *split.meta.shape)
