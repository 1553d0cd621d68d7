"""What a model can be measured on, declared as data on its class.

Evaluation, the figures and validation read the declaration; the registry checks it against the
class's methods when the class is registered, so a renamed method fails at import instead of
silently turning a metric into n/a.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Capabilities:
    """What a model declares it can do; each field stands for the methods in `METHODS`."""

    likelihood: Literal["exact", "bound"] | None = None  # bits/dim: exact, or the VAE's bounds
    reconstructs: bool = False  # reconstruction error
    codes: bool = False  # code accuracy
    latent: bool = False  # interpolation figure
    traversal: bool = False  # code traversal figure
    prior: bool = False  # codes against the prior figure


# (field, value) -> the methods a class declaring it must have.
METHODS: dict[tuple[str, object], tuple[str, ...]] = {
    ("likelihood", "exact"): ("log_prob",),
    ("likelihood", "bound"): ("elbo", "iwae_bound"),
    ("reconstructs", True): ("reconstruct",),
    ("codes", True): ("sample_with_codes",),
    ("latent", True): ("sample_latent", "decode_latent"),
    ("traversal", True): ("traversal",),
    ("prior", True): ("prior_sample", "encode"),
}
# Conditional GANs inherit `sample_latent` / `decode_latent`, but their latent path needs a
# condition: no interpolation figure. So `latent` is declared, never inferred from the methods.
DECLARED_ONLY = {"latent"}


def check_capabilities(models: Iterable[type]) -> None:
    """Raise a TypeError naming the model and the method when a class declares a capability
    whose methods it lacks, or has a capability's methods without declaring it."""
    for cls in models:
        caps = cls.capabilities
        for (field, value), methods in METHODS.items():
            declared = getattr(caps, field) == value
            missing = [m for m in methods if not hasattr(cls, m)]
            if declared and missing:
                raise TypeError(
                    f"model '{cls.name}' declares capabilities.{field}={value!r} but has no "
                    f"method '{missing[0]}'"
                )
            if not declared and not missing and field not in DECLARED_ONLY:
                raise TypeError(
                    f"model '{cls.name}' has method '{methods[0]}' but does not declare "
                    f"capabilities.{field}={value!r}"
                )
