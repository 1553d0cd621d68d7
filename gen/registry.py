"""MODELS: the names used in params.yaml and `dvc exp run -S model=...` -> model classes.

Beside the built-in `MODELS`, installed packages add models through entry points
(gen/plugins.py). They are looked for once, the first time a name is not a built-in one (or
the models are listed), so a broken plug-in never touches a run of a built-in model: its one
`Error:` line comes when the user names it, or lists the models (`genbench models`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from gen import plugins
from gen.capabilities import check_capabilities
from gen.conditions import ConditionKind
from gen.config import ConfigError, from_dict
from gen.data import DataConfig, DataMeta
from gen.models.ae import AAE, AE
from gen.models.base import FAMILIES, GenerativeModel, ModelConfig
from gen.models.baseline import Baseline
from gen.models.cyclegan import CycleGAN
from gen.models.diagonal_bilstm import DiagonalBiLSTM
from gen.models.gan import DCGAN, GAN
from gen.models.gated_pixelcnn import GatedPixelCNN
from gen.models.infogan import InfoGAN
from gen.models.pixelcnn import PixelCNN
from gen.models.pixelrnn import RowLSTM
from gen.models.progan import ProGAN
from gen.models.puzzlegan import PuzzleGAN
from gen.models.stargan import StarGAN
from gen.models.text2image import Text2Image
from gen.models.vae import VAE

# In the order the report shows them (family by family), which `benchmark.models: all` keeps.
MODELS: dict[str, type[GenerativeModel]] = {
    "baseline": Baseline,
    "pixelcnn": PixelCNN,
    "gated_pixelcnn": GatedPixelCNN,
    "pixelrnn_row": RowLSTM,
    "pixelrnn_diag": DiagonalBiLSTM,
    "vae": VAE,
    "ae": AE,
    "aae": AAE,
    "gan": GAN,
    "dcgan": DCGAN,
    "infogan": InfoGAN,
    "progan": ProGAN,
    "text2image": Text2Image,
    "puzzlegan": PuzzleGAN,
    "cyclegan": CycleGAN,
    "stargan": StarGAN,
}


def check_class(name: str, cls: type) -> None:
    """Raise a TypeError naming the model when `cls` cannot be model `name`: not a
    GenerativeModel, named otherwise (checkpoints rebuild it by its `name`), a family the
    report lacks, a Config that is no ModelConfig dataclass, or capabilities its methods
    contradict (a renamed method never turns into n/a)."""
    where = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else repr(cls)
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise TypeError(f"{where} is not a subclass of gen.models.base.GenerativeModel")
    if cls.name != name:
        raise TypeError(f"{where}.name is '{cls.name}'; set it to '{name}'")
    if cls.family not in FAMILIES:
        raise TypeError(f"model '{name}' names family '{cls.family}', not in {list(FAMILIES)}")
    config = cls.Config
    dataclass = isinstance(config, type) and dataclasses.is_dataclass(config)
    if not (dataclass and issubclass(config, ModelConfig)):
        raise TypeError(f"model '{name}': its Config is not a dataclass derived from ModelConfig")
    if not isinstance(cls.condition, ConditionKind):
        raise TypeError(f"model '{name}': its condition is not a kind of gen/conditions/")
    check_capabilities([cls])


for _name, _cls in MODELS.items():  # a built-in model that fails these is a bug: at import
    check_class(_name, _cls)


@functools.cache
def _plugins() -> tuple[dict[str, plugins.Plugin], dict[str, str]]:
    return plugins.discover(MODELS, check_class)


def refresh_plugins() -> None:
    """Look for plug-ins again (after installing a package into this running process)."""
    importlib.invalidate_caches()
    _plugins.cache_clear()


def all_models() -> dict[str, type[GenerativeModel]]:
    """The built-in models, then the usable plug-ins."""
    return {**MODELS, **{name: p.cls for name, p in _plugins()[0].items()}}


def plugin_errors() -> dict[str, str]:
    """Each broken plug-in's one-line error, by its entry point's name."""
    return dict(_plugins()[1])


def plugin(name: str) -> plugins.Plugin | None:
    """The plug-in that model `name` comes from; None for a built-in model."""
    return None if name in MODELS else _plugins()[0].get(name)


def model_class(name: str) -> type[GenerativeModel]:
    if name in MODELS:
        return MODELS[name]
    found, errors = _plugins()
    if name in found:
        return found[name].cls
    if name in errors:
        raise plugins.PluginError(errors[name])
    raise ConfigError(f"unknown model '{name}'; known models: {', '.join(all_models())}")


def build(name: str, section: dict[str, Any] | None, meta: DataMeta) -> GenerativeModel:
    """Validate the model's params section and build the model for data described by `meta`."""
    cls = model_class(name)
    cfg = from_dict(cls.Config, name, section)
    return cls(cfg, meta)


def check_data(name: str, section: dict[str, Any] | None, data: DataConfig) -> None:
    """Raise a ConfigError when model `name` cannot train on the data `data` describes (its
    size, captions, domains), judged from params alone: so `dvc repro` and `genbench benchmark`
    stop before any stage has done work rather than at `train`."""
    cls = model_class(name)
    cls.condition.check_data(cls, section, data)
