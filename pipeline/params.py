"""params.yaml -> validated config objects, so every bad value fails before any work starts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gen.classifier import ClassifierConfig
from gen.config import (
    KEY_ONLY,
    MAX_SEED,
    ConfigError,
    as_int,
    at_least,
    checked,
    from_dict,
    in_range,
    one_of,
    positive,
    require,
)
from gen.data import DataConfig
from gen.features import EXTRACTORS
from gen.metrics import INCEPTION_EXTRACTOR
from gen.registry import all_models, check_data, model_class
from gen.train_options import TrainOptions
from gen.user_files import read_yaml
from pipeline.presets import resolve_suite, suite_values

if TYPE_CHECKING:
    import torch


@dataclass
class TrainSettings:
    """The `train:` section: how to run training, whatever the model."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    log_every: int = 50
    checkpoint_every: int = 500
    val_every: int = 250  # validation bits/dim of likelihood models, as a curve
    # CPU threads of every stage. Float sums depend on how work is split over threads, so a
    # fixed count makes results the same bytes on any machine; on small models one thread per
    # process is also the fastest (threads spin against each other on a busy machine).
    threads: int = 1
    # Processes that train one model together (torchrun + DDP; one GPU each on CUDA): each
    # takes an equal slice of every batch, so <model>.batch_size must be a multiple of it.
    nproc: int = 1
    # Opt-in speed: torch.compile of each phase's loss (a C++ compiler on CPU; minutes of
    # compiling per model) and NHWC conv weights and batches. Both change float rounding, so a
    # run's figures differ slightly from the same seed without them.
    compile: bool = False
    channels_last: bool = False

    def validate(self, section: str = "train") -> None:
        require(
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device),
            f"{section}.device={self.device!r} is not allowed; choose auto, cpu, cuda or cuda:N",
        )
        if self.device.startswith("cuda"):
            import torch

            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(self.device.partition(":")[2] or 0)
            require(
                index < have,
                f"{section}.device={self.device} but this machine has "
                + (f"{have} CUDA device(s)" if have else "no CUDA device")
                + "; use auto or cpu",
            )
        require(self.log_every > 0, f"{section}.log_every must be > 0")
        require(self.checkpoint_every > 0, f"{section}.checkpoint_every must be > 0")
        require(self.val_every > 0, f"{section}.val_every must be > 0")
        require(1 <= self.threads <= 256, f"{section}.threads={self.threads} must be in 1..256")
        require(1 <= self.nproc <= 64, f"{section}.nproc={self.nproc} must be in 1..64")
        if self.nproc > 1:
            self._check_gpus(section)
            require(
                not self.compile,
                f"{section}.compile=true is not supported with {section}.nproc={self.nproc}; "
                "set one of them back (compile: false or nproc: 1)",
            )

    def options(
        self, seed: int, device: torch.device, checkpoint: Path, provenance: dict[str, str]
    ) -> TrainOptions:
        """The trainer's options: this section's keys, and what the run adds (its seed, this
        rank's device, the checkpoint it resumes from and writes, what it was made by)."""
        return TrainOptions(
            seed=seed,
            device=device,
            checkpoint=checkpoint,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            val_every=self.val_every,
            precision=self.precision,
            provenance=provenance,
            compile=self.compile,
            channels_last=self.channels_last,
        )

    def _check_gpus(self, section: str) -> None:
        """Several processes on CUDA take one GPU each, cuda:0 to cuda:nproc-1."""
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if self.device == "cpu" or (self.device == "auto" and not have):
            return
        require(
            ":" not in self.device,
            f"{section}.device={self.device} names one GPU but {section}.nproc={self.nproc} "
            "takes one per process; use cuda (pick GPUs with CUDA_VISIBLE_DEVICES)",
        )
        require(
            self.nproc <= have,
            f"{section}.nproc={self.nproc} but this machine has {have} CUDA device(s); "
            f"lower it, or set {section}.device=cpu to train in CPU processes",
        )


MAX_SAMPLES = 200_000  # samples are held in memory; 50,000 is the usual FID count


@dataclass
class EvalSettings:
    """The `eval:` section."""

    n_samples: int = checked(
        1000, in_range(2, MAX_SAMPLES, note="FID is usually reported at 50000")
    )
    # classifier | inception-v3-compat | vgg16 | clip-vit-b-32 (and torch-fidelity's other CLIP
    # names) | dinov2-vit-{s,b,l,g}-14-local (gen/features.py)
    feature_extractor: str = checked("classifier", one_of(EXTRACTORS))
    # Local weights file of any extractor but the classifier (DINOv2: the official
    # dinov2_vit*14_pretrain.pth; null: torch.hub's cache for DINOv2, a download for the others).
    feature_weights: str | None = None
    inception_weights: str | None = None  # the older key for inception-v3-compat's file
    iwae_k: int = checked(100, at_least(1))
    batch_size: int = checked(500, positive(name=KEY_ONLY))
    # Capped at the smaller of the two sets.
    kid_subset_size: int = checked(1000, at_least(2, name=KEY_ONLY))
    # Bootstrap resamples of the samples: each FID/KID's own sampling spread.
    n_boot: int = checked(20, at_least(2))
    # Draws of real training images for the `data` row.
    reference_draws: int = checked(5, at_least(1))
    # Quality along training (gen/quality_curve.py): points before the last step, each at half
    # the step of the next (0: no curve), and the samples each point scores against the
    # validation split (IS's 10 splits need 10).
    curve_points: int = checked(7, in_range(0, 20))
    curve_samples: int = checked(200, in_range(10, MAX_SAMPLES))

    def validate(self, section: str = "eval") -> None:
        require(
            not (self.feature_weights and self.inception_weights)
            or self.feature_weights == self.inception_weights,
            f"{section}.feature_weights and {section}.inception_weights name different files; "
            f"keep one ({section}.feature_weights)",
        )

    def weights(self) -> str | None:
        """The weights file given for the feature extractor (None for the classifier, whose
        weights the classifier stage makes)."""
        if self.feature_extractor == "classifier":
            return None
        if self.feature_extractor == INCEPTION_EXTRACTOR:
            return self.feature_weights or self.inception_weights
        return self.feature_weights


ALL = "all"  # benchmark.models: every model the data can serve (pipeline/selection.py)


@dataclass
class BenchmarkSettings:
    # `all` or a list of model names (a list is run as written; see pipeline/selection.py).
    models: Any = ALL
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training seeds per model
    # Experiments at once (dvc exp run --temp); jobs x threads = cores.
    jobs: int = checked(1, in_range(1, 64))

    def validate(self, section: str = "benchmark") -> None:
        if self.models != ALL:
            require(
                isinstance(self.models, list) and all(isinstance(m, str) for m in self.models),
                f"{section}.models={self.models!r} must be all or a list of model names",
            )
            require(len(self.models) > 0, f"{section}.models must name at least one model")
        require(len(self.seeds) > 0, f"{section}.seeds must name at least one seed")
        require(
            len(set(self.seeds)) == len(self.seeds) and all(0 <= s <= MAX_SEED for s in self.seeds),
            f"{section}.seeds={self.seeds} must be distinct integers in 0..{MAX_SEED}",
        )
        for name in self.listed() or []:
            model_class(name)

    def listed(self) -> list[str] | None:
        """The models params list; None for all."""
        return None if self.models == ALL else list(self.models)


@dataclass
class Params:
    raw: dict[str, Any]
    model: str
    seed: int
    data: DataConfig
    classifier: ClassifierConfig
    train: TrainSettings
    eval: EvalSettings
    benchmark: BenchmarkSettings
    suite: str | None = None  # the recipe (presets/) merged over params.yaml's values
    path: str = "params.yaml"  # the file read, for messages

    def model_section(self, name: str | None = None) -> dict[str, Any]:
        return self.raw.get(name or self.model) or {}

    def check_nproc(self) -> None:
        """The model's batch splits evenly over train.nproc processes (before any start)."""
        cfg = from_dict(model_class(self.model).Config, self.model, self.model_section())
        n = self.train.nproc
        require(
            cfg.batch_size % n == 0,
            f"{self.model}.batch_size={cfg.batch_size} cannot be split evenly over "
            f"train.nproc={n} processes; make it a multiple of {n}",
        )


PARAMS_FILE = "a YAML mapping of sections (model:, seed:, data:, ...)"


def load_params(path: str | Path = "params.yaml", suite: str | None = None) -> Params:
    """Read and validate params.yaml, with suite `suite`'s values over it (presets/suites/);
    the model's own section is validated when it is built."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file '{path}' not found; run from the repository root")
    raw = read_yaml(path, "params file", PARAMS_FILE)
    if raw is None:
        raise ConfigError(f"params file '{path}' is empty; expected {PARAMS_FILE}")
    if not isinstance(raw, dict):
        raise ConfigError(f"params file '{path}' must be a mapping of sections")
    if suite is not None:
        suite = resolve_suite(raw, suite)
        raw = suite_values(raw, suite)
    return params_from(raw, suite, str(path))


def params_from(raw: dict[str, Any], suite: str | None = None, path: str = "params.yaml") -> Params:
    """Validated params from the values of a params file (with recipe `suite`'s over them)."""
    model = raw.get("model")
    if not isinstance(model, str):  # the list of models is made only when it is shown
        raise ConfigError(f"params 'model' must be a model name; known: {', '.join(all_models())}")
    model_class(model)
    seed = as_int("params 'seed'", raw.get("seed", 0))
    require(0 <= seed <= MAX_SEED, f"params 'seed'={seed} must be in 0..{MAX_SEED} (NumPy's seeds)")
    params = Params(
        raw=raw,
        model=model,
        seed=seed,
        data=from_dict(DataConfig, "data", raw.get("data")),
        classifier=from_dict(ClassifierConfig, "classifier", raw.get("classifier")),
        train=from_dict(TrainSettings, "train", raw.get("train")),
        eval=from_dict(EvalSettings, "eval", raw.get("eval")),
        benchmark=from_dict(BenchmarkSettings, "benchmark", raw.get("benchmark")),
        suite=suite,
        path=path,
    )
    # The model's own keys, and whether it can train on this data: before any stage runs.
    check_data(model, params.model_section(), params.data)
    return params
