"""Every registered model, on tiny data: losses, sampling, seeds, checkpoints, training."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import gen, snapshot, unchanged

from gen.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gen.conditions import caption, domain, image, model_domains, none
from gen.config import ConfigError, as_dict
from gen.data import DataMeta
from gen.metrics import dataset_bpd
from gen.models.baseline import Baseline, BaselineConfig
from gen.nn import categorical_log_prob
from gen.registry import MODELS, build
from gen.trainer import train

# Small enough that every test below runs in well under a second on a CPU.
TINY = {
    "baseline": {},
    "pixelcnn": {"steps": 2, "batch_size": 8, "channels": 8, "layers": 1, "first_kernel": 3},
    "pixelrnn_row": {"steps": 2, "batch_size": 8, "hidden": 8, "layers": 1, "first_kernel": 3},
    "pixelrnn_diag": {"steps": 2, "batch_size": 8, "hidden": 8, "layers": 1, "first_kernel": 3},
    "gated_pixelcnn": {"steps": 2, "batch_size": 8, "channels": 8, "layers": 1, "first_kernel": 3},
    "vae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4},
    "dcgan": {"steps": 2, "batch_size": 8, "g_channels": 8, "d_channels": 8, "z_dim": 4},
    "ae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4},
    "aae": {"steps": 2, "batch_size": 8, "hidden": 8, "latent_dim": 4, "disc_hidden": 8},
    "gan": {"steps": 2, "batch_size": 8, "z_dim": 4, "g_hidden": [16], "d_hidden": [16]},
    "infogan": {
        "steps": 2,
        "batch_size": 8,
        "g_channels": 8,
        "d_channels": 8,
        "z_dim": 4,
        "n_categories": 3,
        "q_hidden": 8,
    },
    "puzzlegan": {"steps": 2, "batch_size": 8, "g_channels": 4, "d_channels": 4, "z_dim": 2},
    "text2image": {"steps": 2, "batch_size": 8, "g_channels": 4, "d_channels": 4, "z_dim": 2},
    "progan": {
        "steps": 2,
        "batch_size": 8,
        "g_channels": 8,
        "d_channels": 8,
        "z_dim": 4,
        "stage_steps": 1,
        "fade_steps": 1,
    },
    "cyclegan": {
        "steps": 2,
        "batch_size": 8,
        "g_channels": 4,
        "d_channels": 4,
        "res_blocks": 1,
        "domain_b": "sans",
    },
    "stargan": {"steps": 2, "batch_size": 8, "g_channels": 4, "d_channels": 4, "res_blocks": 1},
}
# What conditional models need to know of their data: a caption vocabulary and domain names.
EXTRA = {
    "vocab": ["<pad>", "<unk>", "a", "thick", "thin", "one", "two", "seven"],
    "domains": ["handwritten", "sans", "serif"],
}
METAS = {
    "17-levels": DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10, extra=EXTRA),
    "2-levels": DataMeta("tiny-bin", 1, 8, 8, levels=2, n_classes=10, extra=EXTRA),
}
CASES = [(name, levels) for name in MODELS for levels in METAS]


def make(name: str, meta: DataMeta, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build(name, {**TINY[name], **overrides}, meta)


def images(meta: DataMeta, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, meta.levels, (n, *meta.shape), generator=g, dtype=torch.uint8)


def labels_for(model, n: int, seed: int = 0) -> torch.Tensor | None:
    """The `y` the trainer would batch for the model's condition kind (see gen/conditions/)."""
    g = gen(seed)
    if model.condition is caption.KIND:
        return torch.randint(2, len(EXTRA["vocab"]), (n, 4), generator=g)
    if model.condition is domain.KIND:
        ids = torch.tensor(model_domains(model))
        return ids[torch.randint(len(ids), (n,), generator=g)]
    return None


def condition_for(model, n: int, seed: int = 0):
    """The `condition` its `sample` needs: word ids, images, or (images, target domains)."""
    if model.condition is none.KIND:
        return None
    if model.condition is caption.KIND:
        return labels_for(model, n, seed)
    x = images(model.meta, n, seed)
    if model.condition is image.KIND:
        return x
    source = labels_for(model, n, seed)
    ids = model_domains(model)
    return x, torch.tensor([ids[(ids.index(s) + 1) % len(ids)] for s in source.tolist()])


def draw(model, n: int, generator: torch.Generator, seed: int = 0) -> torch.Tensor:
    cond = condition_for(model, n, seed)
    return model.sample(n, generator) if cond is None else model.sample(n, generator, cond)


@pytest.fixture(params=CASES, ids=[f"{n}-{lv}" for n, lv in CASES])
def case(request):
    name, levels = request.param
    meta = METAS[levels]
    return name, meta, make(name, meta)


# ------------------------------------------------------------------------------- the battery
def test_every_registered_model_has_a_tiny_test_config():
    assert set(TINY) == set(MODELS)


def test_model_names_its_phases_and_has_disjoint_parameter_groups(case):
    name, _, model = case
    assert model.name == name
    groups = model.param_groups()
    assert set(model.phases) <= set(groups), "every phase needs a parameter group"
    # By design (Makhzani et al.) the AAE's encoder is in two phases, each with its own optimiser:
    # reconstruction ("ae") and fooling the latent discriminator ("g").
    shared = {id(p) for p in model.encoder_parameters()} if name == "aae" else set()
    seen: set[int] = set()
    for params_ in groups.values():
        ids = {id(p) for p in params_} - shared
        assert not ids & seen, "a parameter belongs to two phases"
        seen |= ids


def test_loss_of_every_phase_is_a_finite_scalar_with_finite_gradients(case):
    _, meta, model = case
    x, y = images(meta, 8), labels_for(model, 8)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        terms = model.loss(x, phase, y)
        assert "loss" in terms
        assert terms["loss"].dim() == 0
        for key, value in terms.items():
            assert torch.isfinite(value).all(), f"{phase}/{key} is not finite"
        terms["loss"].backward()
        grads = [p.grad for p in model.param_groups()[phase] if p.grad is not None]
        assert grads, f"phase {phase} gives no gradient to its own parameters"
        assert all(torch.isfinite(g).all() for g in grads)


def test_sample_has_data_shape_uint8_dtype_and_values_below_levels(case):
    _, meta, model = case
    model.eval()
    x = draw(model, 5, gen(0))
    assert x.shape == (5, *meta.shape)
    assert x.dtype == torch.uint8
    assert int(x.min()) >= 0 and int(x.max()) < meta.levels


def test_same_generator_seed_gives_identical_samples_and_another_seed_different(case):
    _, _, model = case
    model.eval()
    a = draw(model, 6, gen(7))
    torch.manual_seed(99)  # the global RNG must not matter
    b = draw(model, 6, gen(7))
    c = draw(model, 6, gen(8))
    assert torch.equal(a, b)
    if model.condition is domain.KIND:
        return  # a translation is a function of its input: no noise to vary
    # An untrained DCGAN maps every z to nearly the same grey, so compare its continuous output.
    if hasattr(model, "generate") and model.condition is none.KIND:
        a, c = model.generate(6, gen(7)), model.generate(6, gen(8))
    if model.condition is image.KIND:  # likewise for the noise beside the patches ...
        x = condition_for(model, 6)
        a, c = model.complete(x, gen(7))[0], model.complete(x, gen(8))[0]
    if model.condition is caption.KIND:  # ... and beside the captions
        words = condition_for(model, 6)
        a, c = model.generate(words, gen(7)), model.generate(words, gen(8))
    assert not torch.equal(a, c)


def test_likelihood_methods_give_one_value_per_image(case):
    _, meta, model = case
    x = images(meta, 5)
    with torch.no_grad():
        if hasattr(model, "log_prob"):
            lp = model.log_prob(x)
            assert lp.shape == (5,)
            assert torch.isfinite(lp).all()
            assert (lp <= 0).all(), "log-probabilities of discrete data are <= 0"
        if hasattr(model, "elbo"):
            assert model.elbo(x).shape == (5,)
            assert torch.isfinite(model.elbo(x)).all()
        if hasattr(model, "iwae_bound"):
            iw = model.iwae_bound(x, k=3)
            assert iw.shape == (5,)
            assert torch.isfinite(iw).all()


def test_a_training_step_changes_every_trainable_parameter(case):
    name, meta, model = case
    model.cfg.steps = 1
    before = snapshot(model)
    train(model, images(meta, 16), labels_for(model, 16), progress=False)
    after = snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if name == "baseline":
        assert changed == {"logits"}, "the baseline is fitted by counting"
        return
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    if name == "progan":  # step 0 trains at 4x4: the layers of later resolutions wait their turn
        later = ("generator_net.blocks.", "generator_net.to_image.1.")
        later += ("discriminator_net.blocks.", "discriminator_net.from_image.1.")
        trainable = {k for k in trainable if not k.startswith(later)}
    assert changed == trainable, f"unchanged: {sorted(trainable - changed)}"


def test_save_load_round_trip_rebuilds_an_identical_model(case, tmp_path):
    name, meta, model = case
    x = images(meta, 16)
    train(model, x, labels_for(model, 16), seed=1, progress=False)  # leave the initial state
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(
        path,
        {
            "name": model.name,
            "config": as_dict(model.cfg),
            "meta": model.meta.__dict__,
            "state_dict": model.state_dict(),
        },
    )
    loaded = model_from_checkpoint(load_checkpoint(path))
    assert type(loaded) is type(model)
    assert loaded.cfg == model.cfg
    assert loaded.meta == model.meta
    assert not loaded.training
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(draw(model, 4, gen(3)), draw(loaded, 4, gen(3)))
    with torch.no_grad():
        if hasattr(model, "log_prob"):
            assert torch.equal(model.log_prob(x), loaded.log_prob(x))
        if hasattr(model, "elbo"):
            torch.manual_seed(5)
            a = model.elbo(x)
            torch.manual_seed(5)
            assert torch.equal(a, loaded.elbo(x))


# ------------------------------------------------------------------------- phase isolation
def test_dcgan_discriminator_step_leaves_generator_parameters_bit_identical():
    meta = METAS["17-levels"]
    model = make("dcgan", meta)
    model.train()
    groups = model.param_groups()
    opt = torch.optim.Adam(groups["d"], lr=1e-2)
    # Parameters only: the fakes pass through the generator in train mode, which (as in any
    # DCGAN) updates its BatchNorm running statistics.
    g_before = snapshot(model.generator_net)
    d_before = snapshot(model.discriminator_net)
    model.zero_grad(set_to_none=True)
    model.loss(images(meta, 8), "d")["loss"].backward()
    assert all(p.grad is None for p in groups["g"]), "fakes for a D phase are made under no_grad"
    opt.step()
    assert unchanged(g_before, model.generator_net)
    assert not unchanged(d_before, model.discriminator_net)


def test_dcgan_generator_step_leaves_discriminator_parameters_bit_identical():
    meta = METAS["17-levels"]
    model = make("dcgan", meta)
    model.train()
    opt = torch.optim.Adam(model.param_groups()["g"], lr=1e-2)
    d_before = snapshot(model.discriminator_net)
    g_before = snapshot(model.generator_net)
    model.zero_grad(set_to_none=True)
    model.loss(images(meta, 8), "g")["loss"].backward()
    opt.step()
    assert unchanged(d_before, model.discriminator_net)
    assert not unchanged(g_before, model.generator_net)


def test_dcgan_runs_k_discriminator_steps_per_generator_step_with_either_loss():
    meta = METAS["17-levels"]
    for gan_loss in ("non_saturating", "minimax"):
        model = make("dcgan", meta, d_steps=2, gan_loss=gan_loss)
        assert model.phases == ("d", "d", "g")
        result = train(model, images(meta, 16), progress=False, log_every=1)
        # two D steps read a batch each; the G step reads no images (only the batch size)
        assert result.images_seen == model.cfg.steps * 2 * model.cfg.batch_size
        assert all(math.isfinite(v) for row in result.history for v in row.values())


@pytest.mark.parametrize("name", ["gan", "dcgan"])
def test_shared_fakes_run_the_generator_once_per_step_and_g_learns_through_them(name):
    meta = METAS["17-levels"]
    calls = {"fresh": 0, "shared": 0}
    for fakes in calls:
        model = make(name, meta, fakes=fakes, d_steps=1)
        model.generator_net.register_forward_hook(
            lambda *_, f=fakes: calls.__setitem__(f, calls[f] + 1)
        )
        result = train(model, images(meta, 16), progress=False, log_every=1)
        assert all(math.isfinite(v) for row in result.history for v in row.values())
        assert model._shared is None  # nothing with a graph is left on the model
        copy.deepcopy(model)  # so it pickles (checkpoints, MLflow)
    steps = model.cfg.steps
    assert calls == {"fresh": 2 * steps, "shared": steps}


def test_shared_fakes_give_the_generator_its_gradient_through_the_d_steps_fakes():
    meta = METAS["17-levels"]
    model = make("dcgan", meta, fakes="shared")
    model.train()
    groups = model.param_groups()
    model.loss(images(meta, 8), "d")["loss"].backward()
    assert all(p.grad is None for p in groups["g"]), "D's loss reads the fakes detached"
    model.zero_grad(set_to_none=True)
    model.loss(images(meta, 8), "g")["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["g"])


def test_shared_fakes_are_refused_by_a_gan_that_draws_its_own():
    with pytest.raises(ConfigError, match="infogan.fakes=shared is not allowed"):
        make("infogan", METAS["17-levels"], fakes="shared")


def test_dcgan_rejects_an_unknown_phase():
    model = make("dcgan", METAS["17-levels"])
    with pytest.raises(ValueError, match="phase"):
        model.loss(images(model.meta, 4), "model")


# -------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", ["pixelcnn", "vae"])
def test_a_few_training_steps_on_digits_lower_the_loss(name, digits):
    model = make(name, digits.meta, steps=40, batch_size=32, lr=3e-3)
    logged: list[float] = []
    train(
        model,
        digits.train_x,
        log_every=5,
        progress=False,
        callback=lambda step, row: logged.append(row["model/loss"]),
    )
    assert len(logged) == 8
    assert logged[-1] < 0.9 * logged[0], logged


def test_pixelcnn_overfits_a_single_batch(digits):
    x = digits.train_x[:8]
    model = make(
        "pixelcnn",
        digits.meta,
        steps=100,
        batch_size=8,
        lr=1e-2,
        channels=16,
        layers=2,
        first_kernel=7,
    )
    with torch.no_grad():
        start = float(model.loss(x, "model")["bpd"])
    train(model, x, progress=False)
    with torch.no_grad():
        end = float(model.loss(x, "model")["bpd"])
    # An untrained model is close to uniform, log2(17) = 4.09 bits/dim; 8 images can be learnt.
    assert start > 3.5
    assert end < 0.4 * start, (start, end)


# ------------------------------------------------------------------------------- baseline
def test_baseline_fit_gives_the_closed_form_smoothed_count_likelihood(digits):
    alpha = 0.5
    model = Baseline(BaselineConfig(alpha=alpha), digits.meta)
    model.fit_data(digits.train_x)
    x = digits.train_x.numpy().reshape(len(digits.train_x), -1)  # (N, D)
    levels = digits.meta.levels
    counts = np.stack([(x == v).sum(0) for v in range(levels)], axis=1) + alpha  # (D, L)
    p = counts / counts.sum(1, keepdims=True)
    nll = -np.log2(p[np.arange(x.shape[1]), x]).sum(1).mean()
    expected = nll / x.shape[1]
    got = dataset_bpd(model.log_prob, digits.train_x)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_baseline_has_log2_levels_bits_per_dim(levels):
    meta = DataMeta("tiny", 1, 8, 8, levels=levels, n_classes=10)
    model = Baseline(BaselineConfig(), meta)  # logits all zero
    assert float(model.logits.abs().max()) == 0.0
    bpd = dataset_bpd(model.log_prob, images(meta, 20))
    assert bpd == pytest.approx(math.log2(levels), rel=1e-6)


def test_baseline_training_only_counts_and_consumes_no_batches(digits):
    model = make("baseline", digits.meta)
    result = train(model, digits.train_x, progress=False)
    assert result.steps == 0
    assert result.images_seen == 0 and result.images_per_s is None  # n/a in the report
    assert dataset_bpd(model.log_prob, digits.test_x) < math.log2(17)


# ------------------------------------------------------------------------------------ VAE
def test_vae_loss_is_the_negative_elbo_per_dimension():
    meta = METAS["17-levels"]
    model = make("vae", meta)
    x = images(meta, 8)
    with torch.no_grad():
        torch.manual_seed(4)
        loss = model.loss(x, "model")["loss"]
        torch.manual_seed(4)
        elbo = model.elbo(x)
    assert float(loss) == pytest.approx(float(-elbo.mean() / meta.dims), rel=1e-5)


def test_vae_bernoulli_decoder_for_two_levels_is_a_two_class_categorical():
    meta = METAS["2-levels"]
    model = make("vae", meta)
    x = images(meta, 4)
    with torch.no_grad():
        logits = model.decode(torch.randn(4, model.cfg.latent_dim))
        assert logits.shape == (4, *meta.shape)
        as_categorical = torch.stack([torch.zeros_like(logits), logits], dim=2)
        expected = categorical_log_prob(as_categorical, x)
        assert torch.allclose(model.log_px_given_z(logits, x), expected, atol=1e-4)


@pytest.mark.parametrize("levels", ["17-levels", "2-levels"])
def test_vae_elbo_is_no_tighter_than_the_iwae_bound_after_a_little_training(levels, digits):
    meta = METAS[levels]
    train_x, test_x = digits.train_x, digits.test_x[:200]
    if meta.levels == 2:
        train_x, test_x = (train_x >= 9).to(torch.uint8), (test_x >= 9).to(torch.uint8)
    model = make("vae", meta, steps=60, batch_size=64, lr=3e-3)
    train(model, train_x, progress=False)
    torch.manual_seed(0)
    elbo_bpd = dataset_bpd(model.elbo, test_x)
    iwae_bpd = dataset_bpd(lambda x: model.iwae_bound(x, k=32), test_x)
    assert math.isfinite(elbo_bpd) and math.isfinite(iwae_bpd)
    assert elbo_bpd >= iwae_bpd, (elbo_bpd, iwae_bpd)
