"""CycleGAN and StarGAN: unpaired translation between the data's image domains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import snapshot, unchanged

from gen.conditions import model_domains
from gen.config import ConfigError, from_dict
from gen.data import DataMeta, to_unit
from gen.models.cyclegan import CycleGAN
from gen.models.gan import d_loss_terms, g_loss
from gen.models.stargan import StarGAN
from gen.models.translation import adversarial_loss
from gen.trainer import train

NAMES = ["handwritten", "sans", "serif"]
META = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10, extra={"domains": NAMES})
TINY = {"steps": 2, "batch_size": 8, "g_channels": 4, "d_channels": 4, "res_blocks": 1}
MODELS = {"cyclegan": CycleGAN, "stargan": StarGAN}
# Test ids -> a model and its overrides: the mechanics every variant must share.
VARIANTS = {
    **{name: (cls, {}) for name, cls in MODELS.items()},
    "cyclegan+semantic": (CycleGAN, {"semantic_weight": 1.0}),
    "stargan+semantic": (StarGAN, {"semantic_weight": 1.0}),
}


def make(name: str, meta: DataMeta = META, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cls, variant = VARIANTS[name]
    return cls(from_dict(cls.Config, cls.name, {**TINY, **variant, **overrides}), meta)


def images(n: int, seed: int = 0, meta: DataMeta = META) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, meta.levels, (n, *meta.shape), generator=g, dtype=torch.uint8)


def with_labels(model, domains: torch.Tensor) -> torch.Tensor:
    """y for `model`: the domain ids, beside class labels 0, 1, 2... when it uses labels."""
    if not model.uses_labels:
        return domains
    return torch.stack([domains, torch.arange(len(domains)) % model.meta.n_classes], dim=1)


def mixed(model, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch cycling through the model's domains, with its domain ids (and labels)."""
    ids = torch.tensor(model.domain_ids)
    return images(n, seed, model.meta), with_labels(model, ids[torch.arange(n) % len(ids)])


def batch(model, n: int = 8) -> dict[str, torch.Tensor]:
    """`mixed` as the keyword arguments of `loss`."""
    x, y = mixed(model, n)
    return {"x": x, "y": y}


def training_data(model, split):
    return model.condition.training_data(model, split)


def sampling_conditions(model, split, n, generator):
    return model.condition.sampling_conditions(model, split, n, generator)


def other_domains(model, y: torch.Tensor) -> torch.Tensor:
    """For each source id, the next of the model's domains."""
    ids = model.domain_ids
    return torch.tensor([ids[(ids.index(s) + 1) % len(ids)] for s in y.tolist()])


both = pytest.mark.parametrize("name", list(MODELS))
variants = pytest.mark.parametrize("name", list(VARIANTS))


# ----------------------------------------------------------------------------- domains
def test_cyclegan_translates_between_its_two_named_domains_in_the_data_numbering():
    model = make("cyclegan")
    assert (model.cfg.domain_a, model.cfg.domain_b) == ("handwritten", "serif")
    assert model.domain_ids == [0, 2]
    assert make("cyclegan", domain_a="serif", domain_b="sans").domain_ids == [2, 1]


def test_stargan_translates_among_all_domains_with_one_class_logit_per_domain():
    for names in (["a", "b"], NAMES, ["a", "b", "c", "d"]):
        meta = DataMeta("tiny", 1, 8, 8, levels=17, n_classes=10, extra={"domains": names})
        model = make("stargan", meta)
        assert model.domain_ids == list(range(len(names)))
        adv, cls = model.discriminator_net(torch.zeros(5, *meta.shape))
        assert cls.shape == (5, len(names))
        assert adv.shape[:2] == (5, 1), "a real/fake logit per patch"


def test_stargan_training_targets_are_another_domain_drawn_uniformly():
    model = make("stargan")
    source = torch.arange(3).repeat(3000)
    target = model.random_targets(source)
    assert (target != source).all()
    for s in range(3):
        counts = torch.bincount(target[source == s], minlength=3).float() / 3000
        expected = torch.tensor([0.5 if t != s else 0.0 for t in range(3)])
        assert torch.allclose(counts, expected, atol=0.05)


def test_training_data_holds_only_the_domains_a_model_translates(digits):
    model = make("cyclegan", digits.meta)
    assert model_domains(model) == [0, 2]
    _, y = training_data(model, digits)
    assert set(y.unique().tolist()) == {0, 2}
    _, y = training_data(make("stargan", digits.meta), digits)
    assert set(y.unique().tolist()) == {0, 1, 2}


# ------------------------------------------------------------------------------- losses
@variants
def test_loss_of_every_phase_is_a_finite_scalar_with_finite_gradients(name):
    model = make(name)
    x, y = mixed(model)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        terms = model.loss(x, phase, y)
        assert terms["loss"].dim() == 0
        assert all(torch.isfinite(v).all() for v in terms.values()), (phase, terms)
        terms["loss"].backward()
        grads = [p.grad for p in model.param_groups()[phase] if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase


@variants
@pytest.mark.parametrize("present", [0, 1])
def test_a_batch_with_only_one_domain_gives_finite_losses(name, present):
    model = make(name)
    x = images(6)
    y = with_labels(model, torch.full((6,), model.domain_ids[present]))
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        terms = model.loss(x, phase, y)
        assert all(torch.isfinite(v).all() for v in terms.values()), (phase, terms)
        terms["loss"].backward()
        grads = [p.grad for p in model.param_groups()[phase] if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase


@both
def test_loss_needs_the_domain_ids_and_rejects_domains_the_model_does_not_know(name):
    model = make(name)
    with pytest.raises(ValueError, match="domain ids"):
        model.loss(images(4), "d")
    if name == "cyclegan":  # sans (1) is not one of its two domains
        with pytest.raises(ValueError, match=r"\[1\]"):
            model.loss(images(4), "g", torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="phase"):
        model.loss(**batch(model), phase="model")


def test_phases_are_k_discriminator_steps_then_one_generator_step():
    for name in MODELS:
        assert make(name).phases == ("d", "g")
        assert make(name, d_steps=3).phases == ("d", "d", "d", "g")


def test_non_saturating_adversarial_loss_is_the_gan_modules_and_least_squares_its_formula():
    real, fake = torch.randn(10), torch.randn(10)
    ns = adversarial_loss(real, True, "non_saturating") + adversarial_loss(
        fake, False, "non_saturating"
    )
    assert torch.allclose(ns, d_loss_terms(real, fake)["loss"])
    g = adversarial_loss(fake, True, "non_saturating")
    assert torch.allclose(g, g_loss(fake, "non_saturating"))
    ls = adversarial_loss(real, True, "least_squares") + adversarial_loss(
        fake, False, "least_squares"
    )
    assert torch.allclose(ls, ((real - 1) ** 2).mean() + (fake**2).mean())
    assert float(adversarial_loss(torch.empty(0), True, "least_squares")) == 0.0


def test_cyclegan_generator_loss_is_adversarial_plus_weighted_cycle_and_identity():
    x, y = mixed(make("cyclegan"))
    for identity in (0.0, 0.5):
        model = make("cyclegan", identity_weight=identity, cycle_weight=7.0)
        terms = model.loss(x, "g", y)
        expected = terms["adv"] + 7.0 * terms["cycle"]
        if identity:
            expected = expected + identity * 7.0 * terms["identity"]
        else:
            assert "identity" not in terms
        assert torch.allclose(terms["loss"], expected)


def test_stargan_generator_loss_is_adversarial_plus_weighted_class_and_reconstruction():
    model = make("stargan", cls_weight=2.0, rec_weight=3.0)
    terms = model.loss(**batch(model), phase="g")
    expected = terms["adv"] + 2.0 * terms["cls_fake"] + 3.0 * terms["rec"]
    assert torch.allclose(terms["loss"], expected)


def test_semantic_term_is_the_class_heads_cross_entropy_of_translations_vs_source_labels():
    """Each D classifies its domain's real digits (D loss) and reads the digit of the
    translations into its domain, which should be the source's (G loss)."""
    model = make("cyclegan+semantic", semantic_weight=2.0, identity_weight=0.0)
    x, y = mixed(model)
    torch.manual_seed(0)
    g = model.loss(x, "g", y)
    assert torch.allclose(g["loss"], g["adv"] + 10.0 * g["cycle"] + 2.0 * g["semantic"])

    a_id, b_id = model.domain_ids
    u = to_unit(x, META.levels)
    real_a, real_b = u[y[:, 0] == a_id], u[y[:, 0] == b_id]
    G, D = model.generator_net, model.discriminator_net
    by_hand = F.cross_entropy(D["b"](G["ab"](real_a))[1], y[y[:, 0] == a_id, 1]) + (
        F.cross_entropy(D["a"](G["ba"](real_b))[1], y[y[:, 0] == b_id, 1])
    )
    assert torch.allclose(g["semantic"], by_hand)

    relabelled = y.clone()
    relabelled[:, 1] = (relabelled[:, 1] + 3) % 10
    other = model.loss(x, "g", relabelled)
    assert not torch.allclose(other["semantic"], g["semantic"])
    assert torch.equal(other["cycle"], g["cycle"]), "labels touch only the semantic term"

    d = model.loss(x, "d", y)
    assert torch.allclose(d["loss"], d["d_a"] + d["d_b"] + 2.0 * d["cls_real"])


def test_stargan_semantic_term_reads_the_digit_of_translations_beside_their_domain():
    model = make("stargan+semantic", semantic_weight=2.0, cls_weight=3.0, rec_weight=5.0)
    x, y = mixed(model)
    adv, domain, digit = model.judge(torch.zeros(4, *META.shape))
    assert domain.shape == (4, len(NAMES)) and digit.shape == (4, META.n_classes)
    torch.manual_seed(0)
    g = model.loss(x, "g", y)
    expected = g["adv"] + 3.0 * g["cls_fake"] + 5.0 * g["rec"] + 2.0 * g["semantic"]
    assert torch.allclose(g["loss"], expected)

    torch.manual_seed(0)  # the same draw of target domains as inside loss
    fake = model.generate(to_unit(x, META.levels), model.random_targets(y[:, 0]))
    assert torch.allclose(g["semantic"], F.cross_entropy(model.judge(fake)[2], y[:, 1]))
    d = model.loss(x, "d", y)
    assert torch.allclose(d["loss"], d["adv"] + 3.0 * d["cls_real"] + 2.0 * d["digit_real"])


def test_plain_stargan_reads_only_the_domain():
    model = make("stargan")
    assert not model.uses_labels
    _, domain, digit = model.judge(torch.zeros(4, *META.shape))
    assert domain.shape == (4, len(NAMES)) and digit.shape == (4, 0)
    assert "semantic" not in model.loss(**batch(model), phase="g")


def test_plain_cyclegan_has_no_class_heads_and_needs_no_labels():
    model = make("cyclegan")
    assert not model.uses_labels
    assert isinstance(model.discriminator_net["a"](torch.zeros(2, *META.shape)), torch.Tensor)
    assert "semantic" not in model.loss(**batch(model), phase="g")
    semantic = make("cyclegan+semantic")
    adv, cls = semantic.discriminator_net["b"](torch.zeros(2, *META.shape))
    assert cls.shape == (2, META.n_classes) and adv.shape[:2] == (2, 1)


@pytest.mark.parametrize("name", ["cyclegan+semantic", "stargan+semantic"])
def test_the_semantic_term_refuses_a_batch_without_class_labels(name):
    model = make(name)
    x, y = mixed(model)
    with pytest.raises(ValueError, match="class label"):
        model.loss(x, "g", y[:, 0])


@pytest.mark.parametrize("name", ["cyclegan+semantic", "stargan+semantic"])
def test_the_semantic_term_trains_on_domain_ids_beside_the_images_own_labels(name, digits):
    model = make(name, digits.meta)
    x, y = training_data(model, digits)
    d = digits.domains
    keep = torch.isin(d.train_d, torch.tensor(model.domain_ids))
    assert y.shape == (len(x), 2)
    assert torch.equal(y[:, 0], d.train_d[keep]) and torch.equal(y[:, 1], d.train_y[keep])


@pytest.mark.parametrize("name", ["cyclegan+semantic", "stargan+semantic"])
def test_the_semantic_term_on_domains_without_labels_says_to_turn_it_off(name, digits):
    from dataclasses import replace

    unlabelled = replace(digits.domains, train_y=torch.zeros_like(digits.domains.train_y))
    model = make(name, digits.meta)
    with pytest.raises(ConfigError, match=f"set {model.name}.semantic_weight to 0") as info:
        training_data(model, replace(digits, domains=unlabelled))
    assert "\n" not in str(info.value)


def test_the_discriminators_learn_to_read_the_digits_of_their_domains(digits):
    model = make("cyclegan+semantic", digits.meta, steps=40, batch_size=32, lr=1e-2, d_channels=16)
    x, y = training_data(model, digits)
    history = train(model, x, y, progress=False, log_every=5).history
    read = [row["d/cls_real"] for row in history]
    assert read[-1] < 0.5 * read[0], read


def test_generator_steps_against_fixed_class_heads_lower_the_semantic_term():
    model = make("cyclegan+semantic", semantic_weight=10.0)
    x, y = mixed(model, n=16)

    def steps(phase: str, n: int) -> None:
        opt = torch.optim.Adam(model.param_groups()[phase], lr=1e-2)
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            model.loss(x, phase, y)["loss"].backward()
            opt.step()

    steps("d", 30)  # heads that tell the digits apart, then kept fixed
    first = float(model.loss(x, "g", y)["semantic"])
    steps("g", 20)
    assert float(model.loss(x, "g", y)["semantic"]) < 0.5 * first


def strided(net: torch.nn.Module) -> int:
    return sum(1 for m in net.modules() if getattr(m, "stride", (1, 1)) == (2, 2))


@both
def test_g_downsamplings_sets_the_generators_halvings_apart_from_the_discriminators(name):
    """8x8 images allow one halving; g_downsamplings 0 keeps G at full resolution."""
    same, local = make(name), make(name, g_downsamplings=0)
    assert strided(same.generator_net) > 0 and strided(local.generator_net) == 0
    assert strided(same.discriminator_net) == strided(local.discriminator_net) > 0
    x, y = mixed(local)
    assert torch.isfinite(local.loss(x, "g", y)["loss"])


@both
def test_cycle_noise_perturbs_only_the_way_back_of_the_cycle(name):
    """The adversarial (and identity) terms see the clean translation; the reconstruction
    varies with the noise drawn for the way back."""
    x, y = mixed(make(name))
    back = "cycle" if name == "cyclegan" else "rec"

    def terms(noise: float, seed: int) -> dict[str, torch.Tensor]:
        model = make(name, cycle_noise=noise)
        torch.manual_seed(seed)
        return model.loss(x, "g", y)

    clean, noisy, other = terms(0.0, 1), terms(0.3, 1), terms(0.3, 2)
    assert not torch.equal(noisy[back], clean[back])
    assert not torch.equal(noisy[back], other[back])
    if name == "cyclegan":
        assert torch.equal(noisy["identity"], clean["identity"])
    else:
        assert torch.equal(noisy["adv"], clean["adv"])


# ---------------------------------------------------------------------- phase isolation
@variants
def test_a_discriminator_step_leaves_the_generator_bit_identical(name):
    model = make(name)
    groups = model.param_groups()
    opt = torch.optim.Adam(groups["d"], lr=1e-2)
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    model.zero_grad(set_to_none=True)
    model.loss(**batch(model), phase="d")["loss"].backward()
    assert all(p.grad is None for p in groups["g"]), "fakes for a D phase are made under no_grad"
    opt.step()
    assert unchanged(g_before, model.generator_net)
    assert not unchanged(d_before, model.discriminator_net)


@variants
def test_a_generator_step_leaves_the_discriminator_bit_identical(name):
    model = make(name)
    opt = torch.optim.Adam(model.param_groups()["g"], lr=1e-2)
    g_before, d_before = snapshot(model.generator_net), snapshot(model.discriminator_net)
    model.zero_grad(set_to_none=True)
    model.loss(**batch(model), phase="g")["loss"].backward()
    opt.step()
    assert unchanged(d_before, model.discriminator_net)
    assert not unchanged(g_before, model.generator_net)


@variants
def test_parameter_groups_are_disjoint_and_cover_the_model(name):
    model = make(name)
    d, g = ({id(p) for p in ps} for ps in model.param_groups().values())
    assert not d & g
    assert d | g == {id(p) for p in model.parameters()}


# ---------------------------------------------------------------------------- translating
@both
@pytest.mark.parametrize(
    "meta",
    [
        META,
        DataMeta("bin", 1, 8, 8, levels=2, n_classes=10, extra={"domains": NAMES}),
        DataMeta("rgb", 3, 16, 16, levels=256, n_classes=10, extra={"domains": NAMES}),
        DataMeta("odd", 1, 7, 7, levels=17, n_classes=10, extra={"domains": NAMES}),
    ],
    ids=lambda m: m.name,
)
def test_translate_gives_uint8_images_of_the_input_shape_in_the_data_levels(name, meta):
    model = make(name, meta).eval()
    x, y = mixed(model, 5)
    out = model.translate(x, other_domains(model, y))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert int(out.max()) < meta.levels


def test_cyclegan_translates_to_b_with_g_ab_and_to_a_with_g_ba():
    model = make("cyclegan").eval()
    x = images(6)
    a, b = model.domain_ids
    to_b = model.translate(x, torch.full((6,), b))
    to_a = model.translate(x, torch.full((6,), a))
    assert not torch.equal(to_a, to_b)
    mixed_targets = torch.tensor([a, b, a, b, a, b])
    out = model.translate(x, mixed_targets)
    assert torch.equal(out[0::2], to_a[0::2]) and torch.equal(out[1::2], to_b[1::2])


@both
def test_translate_rejects_targets_outside_the_model_domains(name):
    model = make(name).eval()
    with pytest.raises(ValueError, match="cannot translate"):
        model.translate(images(2), torch.tensor([0, 7]))


@both
def test_sample_translates_its_condition_and_requires_one(name):
    model = make(name).eval()
    x, y = mixed(model, 6)
    target = other_domains(model, y)
    out = model.sample(6, torch.Generator().manual_seed(0), (x, target))
    assert torch.equal(out, model.translate(x, target))
    with pytest.raises(ValueError, match="condition"):
        model.sample(6, torch.Generator().manual_seed(0))


@both
def test_same_seed_builds_the_same_model_and_the_same_translations(name):
    x, y = mixed(make(name), 6)
    target = other_domains(make(name), y)
    a = make(name, seed=3).eval().translate(x, target)
    b = make(name, seed=3).eval().translate(x, target)
    assert torch.equal(a, b)
    model = make(name, seed=4).eval()
    continuous = [model.translate_unit(x.float() / 8 - 1, target) for _ in range(2)]
    assert torch.equal(*continuous), "translation is deterministic"
    assert not torch.equal(
        continuous[0], make(name, seed=3).translate_unit(x.float() / 8 - 1, target)
    )


@both
def test_reconstruct_cycle_goes_to_the_target_and_back_to_the_source(name):
    model = make(name).eval()
    x, source = mixed(model, 6)
    target = other_domains(model, source)
    back = model.reconstruct_cycle(x, source, target)
    assert torch.equal(back, model.translate(model.translate(x, target), source))
    # With identity generators the round trip (through the quantised images) is exact.
    model.translate_unit = lambda u, t: u
    assert torch.equal(model.reconstruct_cycle(x, source, target), x)


@both
def test_sampling_conditions_from_digits_drive_sample(name, digits):
    model = make(name, digits.meta).eval()
    conds = sampling_conditions(model, digits, 12, torch.Generator().manual_seed(0))
    out = model.sample(12, None, conds.value)
    assert out.shape == (12, *digits.meta.shape) and out.dtype == torch.uint8
    back = model.reconstruct_cycle(conds.sources, conds.source_domains, conds.targets)
    assert back.shape == out.shape


# ------------------------------------------------------------------------------- learning
@variants
@pytest.mark.parametrize("gan_loss", ["least_squares", "non_saturating"])
def test_a_few_training_steps_on_digits_lower_the_cycle_loss(name, gan_loss, digits):
    model = make(
        name, digits.meta, steps=30, batch_size=32, lr=3e-3, g_channels=8, gan_loss=gan_loss
    )
    x, y = training_data(model, digits)
    result = train(model, x, y, progress=False, log_every=5)
    key = "g/rec" if name.startswith("stargan") else "g/cycle"
    values = [row[key] for row in result.history]
    assert all(math.isfinite(v) for row in result.history for v in row.values())
    assert values[-1] < 0.7 * values[0], values


# ------------------------------------------------------------------------------ bad config
def test_cyclegan_rejects_an_unknown_domain_naming_it_and_the_known_ones():
    with pytest.raises(
        ConfigError, match=r"cyclegan\.domain_b='cursive'.*handwritten, sans, serif"
    ):
        make("cyclegan", domain_b="cursive")


def test_cyclegan_rejects_the_same_domain_twice():
    with pytest.raises(ConfigError, match="domain_a and domain_b are both 'serif'"):
        make("cyclegan", domain_a="serif", domain_b="serif")


@both
def test_translation_needs_data_with_at_least_two_domains(name):
    plain = DataMeta("plain", 1, 8, 8, levels=17, n_classes=10)
    with pytest.raises(ConfigError, match="has none; set data.domains"):
        make(name, plain)
    one = DataMeta("one", 1, 8, 8, levels=17, n_classes=10, extra={"domains": ["handwritten"]})
    with pytest.raises(ConfigError, match="at least 2 domains"):
        make(name, one)


@both
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("gan_loss", "wgan", "not allowed; choose one of: least_squares, non_saturating"),
        ("d_steps", 0, "d_steps=0 must be > 0"),
        ("res_blocks", -1, "res_blocks=-1 must be >= 0"),
        ("cycle_noise", -0.1, "cycle_noise=-0.1 must be >= 0"),
        ("g_downsamplings", -1, r"g_downsamplings=-1 must be >= 0 \(or null\)"),
        ("semantic_weight", -1.0, "semantic_weight=-1.0 must be >= 0"),
    ],
)
def test_bad_values_fail_with_a_one_line_config_error(name, key, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        make(name, **{key: value})
    assert "\n" not in str(info.value)
