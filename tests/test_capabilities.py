"""Capabilities and condition kinds are declared on each model class: the declarations must say
what the methods do, and the registry refuses a class whose declaration they contradict."""

from __future__ import annotations

import pytest
import torch

from gen.capabilities import Capabilities, check_capabilities
from gen.conditions import ConditionKind, none
from gen.models.base import GenerativeModel
from gen.registry import MODELS


def from_methods(cls: type) -> Capabilities:
    """What a class's methods say it can do (latent: for unconditional models only, whose
    latent path needs no condition)."""

    def has(*names: str) -> bool:
        return all(hasattr(cls, n) for n in names)

    likelihood = "exact" if has("log_prob") else "bound" if has("iwae_bound", "elbo") else None
    return Capabilities(
        likelihood=likelihood,
        reconstructs=has("reconstruct"),
        codes=has("sample_with_codes"),
        latent=cls.condition is none.KIND and has("sample_latent", "decode_latent"),
        traversal=has("traversal"),
        prior=has("prior_sample", "encode"),
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_declares_what_its_methods_do(name):
    cls = MODELS[name]
    assert cls.capabilities == from_methods(cls)
    assert isinstance(cls.condition, ConditionKind)


def test_a_declared_capability_without_its_method_fails_naming_model_and_method():
    class Bound(GenerativeModel):
        name = "bound"
        capabilities = Capabilities(likelihood="bound")

        def elbo(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    with pytest.raises(TypeError, match=r"^model 'bound' declares .* no method 'iwae_bound'$"):
        check_capabilities([Bound])


def test_a_capability_method_left_undeclared_fails_naming_model_and_method():
    class Reconstructs(GenerativeModel):
        name = "reconstructs"

        def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(TypeError, match=r"^model 'reconstructs' has method 'reconstruct' but"):
        check_capabilities([Reconstructs])

    class Declared(Reconstructs):
        capabilities = Capabilities(reconstructs=True)

    check_capabilities([Declared])  # no error once declared
