"""PixelRNN (Row LSTM, Diagonal BiLSTM) and gated PixelCNN: causality, receptive fields, learning.

Causality is checked with gradients: the logits of channel c at pixel (i, j) must have zero
gradient w.r.t. input channels >= c of (i, j) and every later pixel in raster order.
"""

from __future__ import annotations

import pytest
import torch

from gen.config import ConfigError
from gen.data import DataMeta, to_unit
from gen.models.autoregressive import RowMaskedConv2d, split_groups
from gen.models.diagonal_bilstm import skew, unskew
from gen.nn import channel_groups
from gen.registry import build
from gen.trainer import train

AR_MODELS = ("pixelrnn_row", "pixelrnn_diag", "gated_pixelcnn")
# Small but deep enough that each model's receptive field shows its shape on a 6x6 or 8x8 image.
SMALL = {
    "pixelrnn_row": {"hidden": 24, "layers": 2, "first_kernel": 3, "kernel": 3},
    "pixelrnn_diag": {"hidden": 24, "layers": 1, "first_kernel": 3},
    "gated_pixelcnn": {"channels": 24, "layers": 4, "first_kernel": 7, "kernel": 3},
    "pixelcnn": {"channels": 24, "layers": 4, "first_kernel": 7},
}


def model(name: str, channels: int = 1, size: int = 6, levels: int = 5, **overrides):
    torch.manual_seed(0)
    meta = DataMeta("tiny", channels, size, size, levels=levels, n_classes=3)
    return build(name, {**SMALL[name], **overrides}, meta).eval()


def input_gradients(net, inputs: int = 4) -> tuple[torch.Tensor, list]:
    """|d(logits of target (c, i, j)) / d(input)| (C, H, W) for every target in raster order.

    Each target gets its own copies of `inputs` random images, so one backward pass gives every
    gradient; summing over several images keeps a real dependence from vanishing through a dead
    ReLU. PixelCNN's `net` and the other models' `forward` both map [-1, 1] images to logits.
    """
    c, h, w = net.meta.shape
    levels = net.meta.levels
    targets = [(k, i, j) for i in range(h) for j in range(w) for k in range(c)]
    g = torch.Generator().manual_seed(1)
    x = to_unit(torch.randint(0, levels, (inputs, c, h, w), generator=g), levels)
    x = x.repeat(len(targets), 1, 1, 1).requires_grad_(True)
    out = net.net(x) if hasattr(net, "net") else net(x)
    logits = out.view(len(targets), inputs, c, levels, h, w)
    weights = torch.randn(levels, generator=g)  # a random projection of each logit vector
    picked = [logits[t, :, k, :, i, j] @ weights for t, (k, i, j) in enumerate(targets)]
    torch.cat(picked).sum().backward()
    return x.grad.view(len(targets), inputs, c, h, w).abs().sum(1), targets


def unseen_earlier_pixels(grads: torch.Tensor, targets: list) -> set:
    """(target, pixel) pairs where an earlier pixel (all channels) has no influence at all."""
    _, w = grads.shape[2:]
    missing = set()
    for t, (k, i, j) in enumerate(targets):
        per_pixel = grads[t].sum(0)  # (H, W)
        for p in range(i * w + j):
            if per_pixel.flatten()[p] == 0:
                missing.add(((k, i, j), divmod(p, w)))
    return missing


# ------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", AR_MODELS)
def test_logits_ignore_the_current_subpixel_and_everything_after_it(name, channels):
    grads, targets = input_gradients(model(name, channels))
    w = grads.shape[-1]
    for t, (k, i, j) in enumerate(targets):
        g = grads[t]  # (C, H, W)
        later = g.flatten(1)[:, i * w + j + 1 :]
        assert torch.count_nonzero(later) == 0, f"{name}: channel {k} at ({i}, {j}) sees later"
        assert torch.count_nonzero(g[k:, i, j]) == 0, f"{name}: ({k}, {i}, {j}) sees itself"
        if (k, i, j) != (0, 0, 0):
            assert g.sum() > 0, f"{name}: channel {k} at ({i}, {j}) sees nothing"


@pytest.mark.parametrize("name", AR_MODELS)
def test_colour_channel_depends_on_the_earlier_channels_of_its_pixel(name):
    grads, targets = input_gradients(model(name, channels=3))
    for t, (k, i, j) in enumerate(targets):
        for earlier in range(k):
            assert grads[t, earlier, i, j] > 0, f"{name}: ({k}, {i}, {j}) ignores {earlier}"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", AR_MODELS)
def test_log_prob_is_exact_it_sums_to_one_over_every_possible_image(name, channels):
    check_sums_to_one(model(name, channels, size=2, levels=2))


def test_conditional_marginal_log_prob_sums_to_one_over_every_possible_image():
    check_sums_to_one(model("gated_pixelcnn", 3, size=2, levels=2, conditional=True))


def check_sums_to_one(net) -> None:
    dims = net.meta.dims
    codes = torch.arange(2**dims)
    every = ((codes[:, None] >> torch.arange(dims)) & 1).to(torch.uint8)
    with torch.no_grad():
        total = net.log_prob(every.view(-1, *net.meta.shape)).double().exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "name, conditional",
    [(name, False) for name in (*AR_MODELS, "pixelcnn")] + [("gated_pixelcnn", True)],
)
def test_sampling_shortcuts_give_the_logits_of_the_whole_image(name, conditional):
    """`sample` runs the network on rows 0..i only, and for row i may reuse a context computed
    once from the rows above (the gated PixelCNN's vertical stack)."""
    net = model(name, channels=3, **({"conditional": True} if conditional else {}))
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 5, (2, *net.meta.shape), generator=g, dtype=torch.uint8)
    y = torch.tensor([0, 2]) if conditional else None
    with torch.no_grad():
        full = net.logits(x, y)
        for i in range(x.shape[2]):
            top = net.logits(x[:, :, : i + 1], y)
            assert torch.allclose(top, full[..., : i + 1, :], atol=1e-5), i
            row = net.row_logits(x[:, :, : i + 1], net.row_context(x[:, :, :i], y), y)
            assert torch.allclose(row, full[..., i, :], atol=1e-5), i


# ------------------------------------------------------------------------- receptive fields
def test_gated_pixelcnn_sees_every_earlier_pixel_while_pixelcnn_has_a_blind_spot():
    # Same depth for both: a 7x7 first layer and four 3x3 layers, on 8x8 images.
    gated = input_gradients(model("gated_pixelcnn", size=8))
    plain = input_gradients(model("pixelcnn", size=8))
    assert unseen_earlier_pixels(*gated) == set(), "the gated PixelCNN has a blind spot"
    missing = unseen_earlier_pixels(*plain)
    # The masked stack moves at most one column right per row up after its first layer: the
    # pixel one row up and four columns right is never seen, however deep the stack.
    assert ((0, 4, 1), (3, 5)) in missing
    assert all(pixel[0] < target[1] and pixel[1] > target[2] for target, pixel in missing), (
        "the blind spot lies above and to the right"
    )


def test_gated_pixelcnn_on_colour_data_also_sees_every_earlier_pixel():
    grads, targets = input_gradients(model("gated_pixelcnn", channels=3, size=8))
    assert unseen_earlier_pixels(grads, targets) == set()


def test_diagonal_bilstm_sees_every_earlier_pixel_with_a_single_layer():
    assert unseen_earlier_pixels(*input_gradients(model("pixelrnn_diag", size=6))) == set()


def test_row_lstm_receptive_field_is_a_triangle_above_the_pixel():
    # First layer 3x3 mask A, one Row LSTM layer: d rows up it reaches d columns to the right.
    grads, targets = input_gradients(model("pixelrnn_row", size=6, layers=1))
    seen = grads.sum(1)  # (targets, H, W)
    t = targets.index((0, 4, 2))
    assert seen[t, 3, 3] > 0 and seen[t, 2, 4] > 0 and seen[t, 1, 5] > 0
    assert seen[t, 3, 4] == 0 and seen[t, 2, 5] == 0, "outside the triangle"


def test_diagonal_skew_shifts_row_i_right_by_i_and_unskew_inverts_it():
    x = torch.arange(24.0).view(1, 3, 4, 2) + 1  # (batch, rows, columns, features)
    s = skew(x)
    assert s.shape == (1, 3, 6, 2)
    for i in range(3):
        assert torch.equal(s[0, i, i : i + 4], x[0, i])
        assert s[0, i].count_nonzero() == 4 * 2
    assert torch.equal(unskew(s, 4), x)


def test_row_masked_conv_sees_the_left_of_the_row_and_the_centre_by_colour_group():
    conv = RowMaskedConv2d(3, 6, 5, "A", data_channels=3)
    assert conv.mask.shape == (6, 3, 1, 3)  # 1 x 5 with its (always hidden) right half left out
    assert (conv.mask[:, :, 0, :2] == 1).all()
    groups_out, groups_in = channel_groups(6, 3)[:, None], channel_groups(3, 3)[None, :]
    assert torch.equal(conv.mask[:, :, 0, 2], (groups_in < groups_out).float())


def test_split_groups_keeps_every_part_in_contiguous_colour_groups():
    t = channel_groups(24, 3).float().view(1, 24, 1, 1)  # each channel holds its colour group
    for part in split_groups(t, 4, 3):
        assert torch.equal(part.flatten(), channel_groups(6, 3).float())


# -------------------------------------------------------------------------- conditioning
def test_conditional_gated_pixelcnn_log_prob_depends_on_the_label():
    net = model("gated_pixelcnn", conditional=True)
    x = torch.randint(0, 5, (4, *net.meta.shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_label = torch.stack([net.log_prob(x, torch.full((4,), k)) for k in range(3)])
        assert not torch.allclose(per_label[0], per_label[1])
        # Without labels: the exact marginal under the uniform label prior.
        marginal = torch.logsumexp(per_label, 0) - torch.log(torch.tensor(3.0))
        assert torch.allclose(net.log_prob(x), marginal, atol=1e-5)


def test_conditional_gated_pixelcnn_samples_given_or_drawn_labels():
    net = model("gated_pixelcnn", conditional=True, layers=1)
    a = net.sample(4, torch.Generator().manual_seed(0), y=torch.tensor([0, 1, 2, 0]))
    assert a.shape == (4, *net.meta.shape) and a.dtype == torch.uint8
    b = net.sample(4, torch.Generator().manual_seed(5))
    c = net.sample(4, torch.Generator().manual_seed(5))
    assert torch.equal(b, c)


def test_conditional_gated_pixelcnn_training_uses_the_labels(digits):
    net = build("gated_pixelcnn", {**SMALL["gated_pixelcnn"], "conditional": True}, digits.meta)
    before = {k: v.clone() for k, v in net.named_parameters() if "embed" in k}
    net.cfg.steps = 1
    train(net, digits.train_x[:16], digits.train_y[:16], progress=False)
    after = dict(net.named_parameters())
    assert before and all(not torch.equal(v, after[k]) for k, v in before.items())


# -------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", AR_MODELS)
def test_a_few_training_steps_on_digits_lower_the_loss(name, digits):
    net = build(name, {**SMALL[name], "steps": 30, "batch_size": 32, "lr": 5e-3}, digits.meta)
    logged: list[float] = []
    train(
        net,
        digits.train_x,
        log_every=5,
        progress=False,
        callback=lambda step, row: logged.append(row["model/loss"]),
    )
    assert len(logged) == 6
    assert logged[-1] < 0.8 * logged[0], logged


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "name, key, value, message",
    [
        ("pixelrnn_row", "hidden", -4, r"pixelrnn_row\.hidden=-4 must be > 0"),
        ("pixelrnn_row", "kernel", 4, r"pixelrnn_row\.kernel=4 must be an odd number >= 3"),
        ("pixelrnn_row", "layers", 0, r"pixelrnn_row\.layers=0 must be >= 1"),
        ("pixelrnn_diag", "hidden", 0, r"pixelrnn_diag\.hidden=0 must be > 0"),
        ("pixelrnn_diag", "first_kernel", 6, r"pixelrnn_diag\.first_kernel=6 must be an odd"),
        ("pixelrnn_diag", "dropout", 1.0, r"pixelrnn_diag\.dropout=1\.0 must be in \[0, 1\)"),
        ("gated_pixelcnn", "channels", -1, r"gated_pixelcnn\.channels=-1 must be > 0"),
        ("gated_pixelcnn", "kernel", 2, r"gated_pixelcnn\.kernel=2 must be an odd number >= 3"),
        ("gated_pixelcnn", "conditional", "yes", r"gated_pixelcnn\.conditional='yes' must be"),
    ],
)
def test_bad_params_give_a_one_line_config_error(name, key, value, message):
    meta = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
    with pytest.raises(ConfigError, match=message) as info:
        build(name, {key: value}, meta)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, key", [("pixelrnn_diag", "hidden"), ("gated_pixelcnn", "channels")])
def test_width_is_rounded_up_to_split_into_colour_groups_and_recorded(name, key):
    meta = DataMeta("tiny", 3, 8, 8, levels=17, n_classes=10)
    model = build(name, {key: 8}, meta)
    assert getattr(model.cfg, key) == 9  # the config it is checkpointed and logged with
    assert model.adjusted == {key: (8, 9, "a multiple of 3 for 3-channel data")}
