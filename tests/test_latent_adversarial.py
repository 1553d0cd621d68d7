"""Autoencoders (AE, AAE), the original GAN and InfoGAN, the latent interface shared with the VAE
and DCGAN, and the metrics for codes and reconstructions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import gen, snapshot, unchanged

from gen.config import ConfigError
from gen.data import DataMeta
from gen.metrics import code_accuracy, reconstruction_error
from gen.models.ae import MIXTURE_RADIUS, PRIORS
from gen.models.gan import g_loss
from gen.models.vae import pixel_sample
from gen.plots import interpolation
from gen.registry import build
from gen.trainer import train

META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10)
TINY = {
    "ae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4},
    "aae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4, "disc_hidden": 16},
    "vae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4},
    "gan": {"steps": 2, "batch_size": 8, "z_dim": 4, "g_hidden": [16], "d_hidden": [16]},
    "dcgan": {"steps": 2, "batch_size": 8, "z_dim": 4, "g_channels": 8, "d_channels": 8},
    "infogan": {
        "steps": 2,
        "batch_size": 8,
        "z_dim": 4,
        "g_channels": 8,
        "d_channels": 8,
        "n_categories": 4,
        "n_continuous": 2,
        "q_hidden": 16,
    },
}
AUTOENCODERS = ["ae", "aae", "vae"]


def make(name: str, seed: int = 0, meta: DataMeta = META, **overrides):
    torch.manual_seed(seed)
    return build(name, {**TINY[name], **overrides}, meta)


def images(n: int, seed: int = 0, meta: DataMeta = META) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, meta.levels, (n, *meta.shape), generator=g, dtype=torch.uint8)


def step(model, phase: str, x: torch.Tensor, lr: float = 1e-2) -> dict[str, torch.Tensor]:
    """One optimiser step of `phase`, exactly as the trainer does it."""
    opt = torch.optim.Adam(model.param_groups()[phase], lr=lr)
    model.zero_grad(set_to_none=True)
    terms = model.loss(x, phase)
    terms["loss"].backward()
    opt.step()
    return terms


# ------------------------------------------------------------------------------ latent API
@pytest.mark.parametrize("name", list(TINY))
def test_decoding_latent_draws_gives_images_and_interpolation_is_a_lerp(name):
    model = make(name).eval()
    z = model.sample_latent(5, generator=gen(1))
    assert z.dim() == 2 and len(z) == 5
    assert torch.equal(z, model.sample_latent(5, generator=gen(1))), "seeded by the generator"
    x = model.decode_latent(z)
    assert x.shape == (5, *META.shape) and x.dtype == torch.uint8
    assert int(x.max()) < META.levels
    grid = interpolation(model, pairs=2, steps=3, generator=gen(2))
    assert grid.shape == (6, *META.shape)
    # The middle column decodes the midpoint of the two latent draws.
    z = model.sample_latent(4, generator=gen(2))
    assert torch.equal(grid[1::3], model.decode_latent((z[:2] + z[2:]) / 2))


@pytest.mark.parametrize("name", ["gan", "dcgan", "infogan"])
def test_gan_sample_is_decode_latent_of_sample_latent(name):
    model = make(name).eval()
    assert torch.equal(model.sample(6, gen(3)), model.decode_latent(model.sample_latent(6, gen(3))))


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_samples_draw_pixels_from_the_decoder_of_a_latent_draw(name):
    model = make(name).eval()
    g = gen(3)
    with torch.no_grad():
        expected = pixel_sample(model.decode(model.sample_latent(6, g)), g)
    assert torch.equal(model.sample(6, gen(3)), expected)
    # decode_latent is the noiseless picture: each pixel's most likely level.
    z = model.sample_latent(6, gen(3))
    with torch.no_grad():
        assert torch.equal(model.decode_latent(z), model.decode(z).argmax(2).to(torch.uint8))


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoders_encode_deterministically_and_reconstruct_images(name):
    model = make(name).eval()
    x = images(6)
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (6, model.cfg.latent_dim)
        assert torch.equal(z, model.encode(x))
        r = model.reconstruct(x)
    assert r.shape == x.shape and r.dtype == torch.uint8
    assert torch.equal(r, model.decode_latent(z))


def test_vae_encode_is_the_posterior_mean():
    model = make("vae").eval()
    x = images(4)
    with torch.no_grad():
        assert torch.equal(model.encode(x), model.posterior(x)[0])


def test_latent_models_have_no_likelihood():
    for name in ("ae", "aae", "gan", "infogan"):
        model = make(name)
        assert not any(hasattr(model, m) for m in ("log_prob", "elbo", "iwae_bound")), name


# ------------------------------------------------------------------------------------- AE
def test_ae_fitted_gaussian_is_the_mean_and_covariance_of_the_training_codes():
    model = make("ae", latent_dim=3).eval()
    x = images(200, seed=1)
    model.finish_training(x)
    with torch.no_grad():
        codes = model.encode(x).double().numpy()
    np.testing.assert_allclose(model.prior_mean.numpy(), codes.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.prior_cov.numpy(), np.cov(codes.T), rtol=1e-4, atol=1e-7)
    # Draws from it have those moments too.
    z = model.sample_latent(20000, generator=gen(0)).double().numpy()
    spread = np.sqrt(np.diag(np.cov(codes.T)))
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.05 * spread.max())
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T), atol=0.05 * spread.max() ** 2)


def test_ae_gaussian_is_saved_with_the_weights_and_fitted_by_the_trainer():
    model = make("ae")
    assert {"prior_mean", "prior_cov", "prior_scale"} <= set(model.state_dict())
    assert torch.equal(model.prior_cov, torch.eye(4)), "N(0, I) until fitted"
    train(model, images(32), progress=False)
    assert not torch.equal(model.prior_cov, torch.eye(4))
    scale = model.prior_scale.double()
    assert torch.allclose(scale @ scale.T, model.prior_cov.double(), atol=1e-5)


def test_ae_gaussian_fit_survives_fewer_images_than_latent_dimensions():
    model = make("ae", latent_dim=4).eval()
    model.finish_training(images(2))
    assert torch.isfinite(model.sample_latent(8, generator=gen(0))).all()


# ------------------------------------------------------------------------------------ AAE
@pytest.mark.parametrize("prior", PRIORS)
def test_aae_losses_are_finite_for_every_phase_with_each_prior(prior):
    model = make("aae", prior=prior)
    assert model.phases == ("ae", "d", "g")
    x = images(8)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        terms = model.loss(x, phase)
        assert all(torch.isfinite(v).all() for v in terms.values()), (phase, terms)
        terms["loss"].backward()


@pytest.mark.parametrize("prior", PRIORS)
def test_aae_prior_sample_has_the_latent_shape_and_the_prior_shape(prior):
    model = make("aae", prior=prior, latent_dim=3)
    z = model.prior_sample(4000, generator=gen(0))
    assert z.shape == (4000, 3)
    assert torch.equal(z, model.prior_sample(4000, generator=gen(0)))
    if prior == "uniform":
        assert float(z.min()) >= -1 and float(z.max()) <= 1
        assert abs(float(z.mean())) < 0.05
    elif prior == "mixture":
        radius = z[:, :2].norm(dim=1)
        assert abs(float(radius.median()) - MIXTURE_RADIUS) < 0.3
        angles = torch.atan2(z[:, 1], z[:, 0])
        components = torch.round(angles / (2 * math.pi / 10)) % 10
        assert len(components.unique()) == 10
        assert abs(float(z[:, 2].std()) - 1) < 0.1
    else:
        assert abs(float(z.std()) - 1) < 0.05


def test_aae_unknown_prior_is_a_one_line_error_listing_the_choices():
    with pytest.raises(ConfigError) as err:
        make("aae", prior="bogus")
    message = str(err.value)
    assert "\n" not in message
    assert "aae.prior='bogus'" in message
    assert all(p in message for p in PRIORS)


def test_aae_phases_update_only_their_own_parts():
    model = make("aae")
    x = images(8)
    enc = [model.enc, model.to_code]
    dec = [model.from_z, model.dec]

    before = {id(m): snapshot(m) for m in [*enc, *dec, model.disc]}
    step(model, "ae", x)
    assert unchanged(before[id(model.disc)], model.disc), "reconstruction leaves D alone"
    assert not all(unchanged(before[id(m)], m) for m in enc + dec)

    before = {id(m): snapshot(m) for m in [*enc, *dec, model.disc]}
    step(model, "d", x)
    assert all(unchanged(before[id(m)], m) for m in enc + dec), "a d step leaves the AE alone"
    assert not unchanged(before[id(model.disc)], model.disc)

    before = {id(m): snapshot(m) for m in [*enc, *dec, model.disc]}
    step(model, "g", x)
    assert all(unchanged(before[id(m)], m) for m in dec + [model.disc]), "g moves the encoder"
    assert not all(unchanged(before[id(m)], m) for m in enc)


def test_aae_d_phase_gives_no_gradient_to_the_encoder():
    model = make("aae")
    model.zero_grad(set_to_none=True)
    model.loss(images(8), "d")["loss"].backward()
    assert all(p.grad is None for p in model.encoder_parameters())


# ------------------------------------------------------------------------------------ GAN
def test_minimax_and_non_saturating_generator_losses_on_the_same_d_output():
    logits = torch.tensor([-4.0, -1.0, 0.5, 3.0])
    d = torch.sigmoid(logits)
    minimax = g_loss(logits, "minimax")
    non_saturating = g_loss(logits, "non_saturating")
    assert float(minimax) == pytest.approx(float(torch.log(1 - d).mean()), rel=1e-5)
    assert float(non_saturating) == pytest.approx(float(-torch.log(d).mean()), rel=1e-5)
    assert float(minimax) != pytest.approx(float(non_saturating))


def test_gan_loss_setting_changes_the_generator_loss_but_not_the_discriminator_loss():
    x = images(8)
    out = {}
    for kind in ("minimax", "non_saturating"):
        model = make("gan", gan_loss=kind).eval()  # eval: no dropout, same D output
        with torch.no_grad():
            torch.manual_seed(1)
            g = model.loss(x, "g")
            torch.manual_seed(1)
            d = model.loss(x, "d")
        out[kind] = (float(g["loss"]), float(g["d_fake_for_g"]), float(d["loss"]))
    assert out["minimax"][1] == out["non_saturating"][1], "same D output for the fakes"
    assert out["minimax"][2] == out["non_saturating"][2]
    assert out["minimax"][0] != out["non_saturating"][0]
    assert out["minimax"][0] < 0 < out["non_saturating"][0]


def test_gan_is_fully_connected_and_runs_k_d_steps():
    model = make("gan", d_steps=3, g_hidden=[16, 32])
    assert model.phases == ("d", "d", "d", "g")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not convs
    linear = [m for m in model.generator_net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [16, 32, META.dims]
    norms = [m for m in model.generator_net if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2
    paper = make("gan", g_batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in paper.modules())


@pytest.mark.parametrize("name", ["gan", "infogan"])
def test_gan_phases_update_only_their_own_network(name):
    model = make(name)
    x = images(8)
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    model.zero_grad(set_to_none=True)
    step(model, "d", x)
    assert all(p.grad is None for p in model.param_groups()["g"]), "fakes made under no_grad"
    assert unchanged(g_before, model.generator_net)
    assert not unchanged(d_before, model.discriminator_net)
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    step(model, "g", x)
    assert unchanged(d_before, model.discriminator_net)
    assert not unchanged(g_before, model.generator_net)


# -------------------------------------------------------------------------------- InfoGAN
def test_infogan_traversal_rows_are_categories_and_columns_sweep_a_continuous_code():
    model = make("infogan").eval()
    k, steps = model.cfg.n_categories, 5
    grid = model.traversal(steps, generator=gen(0))
    assert grid.shape == (k * steps, *META.shape) and grid.dtype == torch.uint8
    assert torch.equal(grid, model.traversal(steps, generator=gen(0)))
    # The same grid decoded by hand: one noise vector, code r in row r, c1 from -1 to 1.
    noise = torch.randn((1, model.cfg.z_dim), generator=gen(0)).expand(k * steps, -1)
    cat = torch.arange(k).repeat_interleave(steps)
    cont = torch.zeros(k * steps, model.cfg.n_continuous)
    cont[:, 0] = torch.linspace(-1, 1, steps).repeat(k)
    assert torch.equal(grid, model.decode_latent(model.latent(noise, cat, cont)))


def test_infogan_sample_with_codes_returns_images_and_codes_in_range():
    model = make("infogan").eval()
    x, codes = model.sample_with_codes(50, generator=gen(0))
    assert x.shape == (50, *META.shape) and x.dtype == torch.uint8
    assert codes.shape == (50,) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < model.cfg.n_categories
    assert len(codes.unique()) == model.cfg.n_categories
    assert torch.equal(x, model.sample(50, generator=gen(0)))


def test_infogan_generator_input_holds_noise_one_hot_code_and_continuous_codes():
    model = make("infogan")
    z = model.sample_latent(100, generator=gen(0))
    cfg = model.cfg
    assert z.shape == (100, cfg.z_dim + cfg.n_categories + cfg.n_continuous)
    one_hot = z[:, cfg.z_dim : cfg.z_dim + cfg.n_categories]
    assert torch.equal(one_hot.sum(1), torch.ones(100))
    cont = z[:, -cfg.n_continuous :]
    assert float(cont.min()) >= -1 and float(cont.max()) <= 1


def test_infogan_mutual_information_term_is_in_both_losses_with_its_weight():
    x = images(8)
    losses = {}
    for w in (0.0, 2.0):
        model = make("infogan", info_weight=w).eval()
        for phase in ("d", "g"):
            torch.manual_seed(3)
            with torch.no_grad():
                losses[w, phase] = model.loss(x, phase)
    for phase in ("d", "g"):
        info = float(losses[2.0, phase]["info"])
        assert info > 0
        gap = float(losses[2.0, phase]["loss"]) - float(losses[0.0, phase]["loss"])
        assert gap == pytest.approx(2.0 * info, rel=1e-4)
    # An untrained Q knows nothing: cross-entropy near log(k).
    k = 4
    assert float(losses[0.0, "d"]["info_cat"]) == pytest.approx(math.log(k), rel=0.2)


# -------------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    ("name", "key"),
    [("ae", "model/loss"), ("aae", "ae/loss"), ("infogan", "d/info")],
)
def test_a_few_training_steps_on_digits_lower_the_loss(name, key, digits):
    model = make(name, meta=digits.meta, steps=40, batch_size=32, lr=3e-3)
    logged: list[float] = []
    train(
        model,
        digits.train_x,
        log_every=5,
        progress=False,
        callback=lambda step, row: logged.append(row[key]),
    )
    assert len(logged) == 8
    assert logged[-1] < 0.9 * logged[0], logged


# --------------------------------------------------------------------------------- metrics
def test_code_accuracy_of_a_permuted_labelling_is_one():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 10, 500)
    perm = rng.permutation(10)
    assert code_accuracy(perm[classes], classes, 10) == 1.0
    assert code_accuracy(torch.from_numpy(perm[classes]), torch.from_numpy(classes), 10) == 1.0


def test_code_accuracy_of_constant_predictions_is_about_one_over_n_classes():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 10, 5000)
    acc = code_accuracy(codes, np.full(5000, 3), 10)
    assert acc == pytest.approx(0.1, abs=0.02)
    assert acc == pytest.approx(np.bincount(codes).max() / 5000)


def test_code_accuracy_uses_a_one_to_one_matching():
    # Codes 0 and 1 both look like class 0 most often; only one of them may be matched to it.
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    preds = np.array([0, 0, 1, 0, 0, 2, 2, 2])
    # Best matching: 0->0 (2), 1->... (0->0, 1->2: 1) vs (0->1: 1, 1->0: 2); 2->2 (2).
    assert code_accuracy(codes, preds, 3) == pytest.approx(5 / 8)


def test_code_accuracy_allows_more_codes_than_classes():
    codes = np.array([0, 1, 2, 3])
    preds = np.array([0, 0, 1, 1])
    assert code_accuracy(codes, preds, 2) == pytest.approx(2 / 4)


def test_reconstruction_error_closed_form():
    x = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    assert reconstruction_error(x, x, 17) == 0.0
    assert reconstruction_error(x, torch.full_like(x, 16), 17) == pytest.approx(1.0)
    x_hat = torch.tensor([4, 8, 0, 16, 0, 0, 0, 0], dtype=torch.uint8).view(2, 1, 2, 2)
    assert reconstruction_error(x, x_hat, 17) == pytest.approx((4 + 8 + 16) / 16 / 8)
    with pytest.raises(ValueError, match="shape"):
        reconstruction_error(x, x[:1], 17)


# ------------------------------------------------------------------------------ bad params
@pytest.mark.parametrize(
    ("name", "override", "fragment"),
    [
        ("ae", {"latent_dim": -2}, "ae.latent_dim=-2"),
        ("ae", {"hidden": 0}, "ae.hidden=0"),
        ("aae", {"disc_hidden": -1}, "aae.disc_hidden=-1"),
        ("aae", {"prior": "mixture", "latent_dim": 1}, "aae.latent_dim=1"),
        ("gan", {"g_hidden": [16, -4]}, "gan.g_hidden=[16, -4]"),
        ("gan", {"d_hidden": []}, "gan.d_hidden=[]"),
        ("gan", {"dropout": 1.0}, "gan.dropout=1.0"),
        ("gan", {"z_dim": -1}, "gan.z_dim=-1"),
        ("gan", {"gan_loss": "wasserstein"}, "gan.gan_loss='wasserstein'"),
        ("infogan", {"info_weight": -0.5}, "infogan.info_weight=-0.5"),
        ("infogan", {"n_categories": 1}, "infogan.n_categories=1"),
        ("infogan", {"n_continuous": -1}, "infogan.n_continuous=-1"),
        ("infogan", {"d_channels": -8}, "infogan.d_channels=-8"),
    ],
)
def test_bad_params_are_one_line_errors_naming_the_key(name, override, fragment):
    with pytest.raises(ConfigError) as err:
        make(name, **override)
    message = str(err.value)
    assert fragment in message and "\n" not in message, message


def test_infogan_takes_a_size_that_is_no_power_of_two_from_its_own_start_map():
    model = make("infogan", meta=DataMeta("odd", 1, 12, 12, levels=17, n_classes=10))
    assert model.sample(2, torch.Generator().manual_seed(0)).shape == (2, 1, 12, 12)


def test_gan_discriminator_learns_to_tell_digits_from_a_fixed_generator(digits):
    # The adversarial losses need not fall while both players move; against a frozen G they must.
    model = make("gan", meta=digits.meta, d_hidden=[64])
    opt = torch.optim.Adam(model.param_groups()["d"], lr=3e-3)
    x = digits.train_x[:64]
    losses = []
    for _ in range(30):
        model.zero_grad(set_to_none=True)
        loss = model.loss(x, "d")["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.2), "an untrained D is at chance"
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
