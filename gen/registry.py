"""MODELS: the names used in params.yaml and `dvc exp run -S model=...` -> model classes."""

from __future__ import annotations

from typing import Any

from gen.capabilities import check_capabilities
from gen.config import ConfigError, from_dict
from gen.data import DataConfig, DataMeta
from gen.models.ae import AAE, AE
from gen.models.base import FAMILIES, GenerativeModel
from gen.models.baseline import Baseline
from gen.models.cyclegan import CycleGAN
from gen.models.gan import DCGAN, GAN
from gen.models.gated_pixelcnn import GatedPixelCNN
from gen.models.infogan import InfoGAN
from gen.models.pixelcnn import PixelCNN
from gen.models.pixelrnn import DiagonalBiLSTM, RowLSTM
from gen.models.progan import ProGAN
from gen.models.puzzlegan import PuzzleGAN
from gen.models.stargan import StarGAN
from gen.models.text2image import Text2Image
from gen.models.vae import VAE

MODELS: dict[str, type[GenerativeModel]] = {
    "baseline": Baseline,
    "pixelcnn": PixelCNN,
    "pixelrnn_row": RowLSTM,
    "pixelrnn_diag": DiagonalBiLSTM,
    "gated_pixelcnn": GatedPixelCNN,
    "vae": VAE,
    "dcgan": DCGAN,
    "ae": AE,
    "aae": AAE,
    "gan": GAN,
    "infogan": InfoGAN,
    "text2image": Text2Image,
    "puzzlegan": PuzzleGAN,
    "progan": ProGAN,
    "cyclegan": CycleGAN,
    "stargan": StarGAN,
}


def _check_classes(models: dict[str, type[GenerativeModel]]) -> None:
    """Fail at import, naming the model, when a class names a family the report lacks or
    declares capabilities its methods contradict (a renamed method never turns into n/a)."""
    for name, cls in models.items():
        if cls.family not in FAMILIES:
            raise TypeError(f"model '{name}' names family '{cls.family}', not in {list(FAMILIES)}")
    check_capabilities(models.values())


_check_classes(MODELS)


def model_class(name: str) -> type[GenerativeModel]:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; known models: {', '.join(MODELS)}")
    return MODELS[name]


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
