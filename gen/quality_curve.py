"""Sample quality along training: the final evaluation's figures, on the validation split.

At the steps of a schedule (`curve_steps`) the trainer hands the model to `ValidationQuality`,
which draws samples and scores them against the validation split with the final evaluation's
ruler, whitening (the training split's statistics) and metric code (`gen.evaluation.quality`):
FID, KID, precision, recall, density and coverage, comparable from point to point and, in the
classes' feature space, from model to model. The test split is never read: it stays for the
final evaluation. Conditional models are sampled from conditions of the training split (their
kind's `curve_conditions`), never from the images they are scored against.

A point's figures depend only on the weights and on (seed, step): its own generator draws the
samples, and the trainer runs it on a fork of the random state, so training is unchanged.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from gen.conditions import draw
from gen.data import Split
from gen.evaluation import Protocol, quality
from gen.features import Features, extract
from gen.metrics import MetricError
from gen.models.base import GenerativeModel

# Curve metric (logged as `val/<name>`) -> the key `quality` returns it under.
FIGURES = {
    "fid": "fid",
    "kid": "kid_mean",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
}
CURVE_BOOT = 2  # `quality`'s bootstrap of FID's spread: the fewest it takes (not logged)


def curve_steps(last: int, points: int) -> tuple[int, ...]:
    """The last step and `points` steps before it, each half the next: geometric in steps, so
    evenly spread on a log axis of compute. A short run rounds some onto the same step (fewer
    points); `points` 0 is no curve."""
    if points <= 0 or last <= 0:
        return ()
    return tuple(sorted({max(1, round(last / 2**k)) for k in range(points + 1)}))


def point_seed(seed: int, step: int) -> int:
    """The seed of the curve point at `step` of a run of seed `seed`."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


class ValidationQuality:
    """`curve(step)`: the quality of `n_samples` samples of `model` against the validation
    split. The validation and training features (reference and whitening) are extracted once,
    when it is made."""

    def __init__(
        self,
        model: GenerativeModel,
        split: Split,
        protocol: Protocol,
        n_samples: int,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if split.val_x is None:
            raise MetricError(
                "the quality curve needs a validation split; prepare the data again "
                "(`genbench prepare`)"
            )
        self.model, self.split, self.protocol = model, split, protocol
        self.n, self.seed, self.device = n_samples, seed, device
        self.reference = self._features(split.val_x)
        self.scale = self._features(split.train_x)

    def __call__(self, step: int) -> dict[str, float]:
        model, p = self.model, self.protocol
        seed = point_seed(self.seed, step)
        g = torch.Generator().manual_seed(seed)
        model = self._ready(model)
        conds = model.condition.curve_conditions(model, self.split, self.n, g)
        images = draw(model, self.n, g, conds, p.batch_size, self.device)
        samples = self._features(images)
        # numpy's BLAS on as many threads as torch (train.threads), not one per core: the
        # point then neither fights training for the cores nor depends on the machine's count.
        with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
            q = quality(
                samples, self.reference, self.scale, None, p.kid_subset_size, CURVE_BOOT, seed
            )
        return {f"val/{name}": float(q[key]) for name, key in FIGURES.items()}

    def _ready(self, model: GenerativeModel) -> GenerativeModel:
        """A copy of `model` made ready to sample as training makes it at its end
        (`finish_training`: the plain autoencoder fits its code Gaussian there), so a point
        scores what the final evaluation would at that step, and training goes on untouched."""
        ready = copy.deepcopy(model)
        with torch.no_grad():
            ready.finish_training(self.split.train_x.to(self.device))
        return ready

    def _features(self, images: torch.Tensor) -> Features:
        p = self.protocol
        weights = p.weights("classes")
        levels = self.split.meta.levels
        return extract(images, levels, p.extractor, weights, p.batch_size, self.device)
