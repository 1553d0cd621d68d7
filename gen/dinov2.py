"""DINOv2 feature spaces (FD_DINOv2) from the official weights files, offline.

torch-fidelity 0.4.0 registers `dinov2-vit-{s,b,l,g}-14` but builds them only through torch.hub
(a local weights path raises NotImplementedError), which needs the internet. This module is
the same network, facebookresearch/dinov2's `DinoVisionTransformer` at inference (pre-norm
blocks with LayerScale, position embeddings interpolated bicubically to the input's patch grid
with DINOv2's 0.1 offset, the final LayerNorm's CLS token as the feature), built from the
official `dinov2_vit*14_pretrain.pth` state dict, and registered with torch-fidelity as
`<its name>-local`. The registered class is torch-fidelity's own DINOv2 extractor with only
the loading replaced, so the preprocessing is theirs: RGB uint8, TF1-compatible bilinear
resize to 224x224, ImageNet mean and std. (dgm-eval and EDM2 resize with PIL bicubic instead,
so their FD_DINOv2 figures are close to these, not equal.)

The network's width, depth, patch size and feed-forward kind are read from the file (heads:
one per 64 channels, as in every DINOv2 size), so a small file with the official key names
builds a small network; a file of another official size than the name says is refused.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gen.metrics import MetricError

HEAD_DIM = 64  # channels per attention head in every DINOv2 size (S/6, B/12, L/16, g/24)
POS_OFFSET = 0.1  # DINOv2's offset on the interpolation scale (facebookresearch/dino#8)
EPS = 1e-6  # its LayerNorms' epsilon
URL = "https://dl.fbaipublicfiles.com/dinov2/{arch}/{arch}_pretrain.pth"


@dataclass(frozen=True)
class Official:
    """One official DINOv2 backbone: its torch.hub name and size."""

    arch: str  # torch.hub's name: dinov2_vits14
    width: int
    depth: int

    @property
    def file(self) -> str:
        return f"{self.arch}_pretrain.pth"

    @property
    def url(self) -> str:
        return URL.format(arch=self.arch)


# genbench's names (torch-fidelity's, with `-local`): the official backbone each stands for.
MODELS = {
    "dinov2-vit-s-14-local": Official("dinov2_vits14", 384, 12),
    "dinov2-vit-b-14-local": Official("dinov2_vitb14", 768, 12),
    "dinov2-vit-l-14-local": Official("dinov2_vitl14", 1024, 24),
    "dinov2-vit-g-14-local": Official("dinov2_vitg14", 1536, 40),
}


# --------------------------------------------------------------------------- the network
class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """ViT-S/B/L's feed-forward."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    """ViT-g's feed-forward (dinov2's SwiGLUFFNFused: both gates in one matrix)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(width, 2 * hidden)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, width: int, heads: int, ffn: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=EPS)
        self.attn = Attention(width, heads)
        self.ls1 = LayerScale(width)
        self.norm2 = nn.LayerNorm(width, eps=EPS)
        self.mlp = ffn
        self.ls2 = LayerScale(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class Shape:
    """A DINOv2 ViT's size, as read from its state dict."""

    width: int
    depth: int
    patch: int
    grid: int  # the position embeddings' side, in patches (37 in the official files)
    ffn: str  # "mlp" or "swiglu"
    hidden: int  # the feed-forward's hidden width


class ViT(nn.Module):
    """DINOv2's vision transformer at inference: images (N, 3, H, W) -> the normed CLS token.
    Parameter names are those of the official state dict; `mask_token` (used only in
    training) is kept so that the official file loads strictly."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        w = shape.width
        self.patch = shape.patch
        self.patch_embed = PatchEmbed(w, shape.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + shape.grid**2, w))
        self.mask_token = nn.Parameter(torch.zeros(1, w))
        ffn = Mlp if shape.ffn == "mlp" else SwiGLU
        self.blocks = nn.ModuleList(
            Block(w, w // HEAD_DIM, ffn(w, shape.hidden)) for _ in range(shape.depth)
        )
        self.norm = nn.LayerNorm(w, eps=EPS)

    def position_embeddings(self, rows: int, cols: int) -> torch.Tensor:
        """The embeddings for a rows x cols patch grid: the stored ones on their own grid,
        else bicubically interpolated as DINOv2 does (scale factors, not sizes, offset by 0.1:
        the scale factors set where the bicubic kernel samples, so this matters to the bit)."""
        pos = self.pos_embed
        side = math.isqrt(pos.shape[1] - 1)
        if rows == cols == side:
            return pos
        cls, grid = pos[:, :1].float(), pos[:, 1:].float()
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((rows + POS_OFFSET) / side, (cols + POS_OFFSET) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if grid.shape[-2:] != (rows, cols):
            raise ValueError(f"position embeddings interpolated to {tuple(grid.shape[-2:])}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat((cls, grid), dim=1).to(pos.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(len(x), -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embeddings(rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


# ------------------------------------------------------------------------- the weights
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, refusing files that hold other Python objects. Memory-
    mapped where the file allows it (torch's zip format), so a check reads little of it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def shape_of(sd: dict[str, torch.Tensor]) -> Shape:
    """The network a DINOv2 state dict describes; ValueError if it is not one."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"not a DINOv2 ViT state dict (no {', '.join(missing)})")
    width = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = sum(1 for k in sd if k.startswith("blocks.") and k.endswith(".norm1.weight"))
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    if width % HEAD_DIM or depth == 0 or grid**2 + 1 != sd["pos_embed"].shape[1]:
        raise ValueError(
            f"not a DINOv2 ViT state dict (width {width}, {depth} blocks, "
            f"{sd['pos_embed'].shape[1]} position embeddings)"
        )
    if "blocks.0.mlp.fc1.weight" in sd:
        return Shape(width, depth, patch, grid, "mlp", sd["blocks.0.mlp.fc1.weight"].shape[0])
    if "blocks.0.mlp.w12.weight" in sd:
        hidden = sd["blocks.0.mlp.w12.weight"].shape[0] // 2
        return Shape(width, depth, patch, grid, "swiglu", hidden)
    raise ValueError("not a DINOv2 ViT state dict (no blocks.0.mlp.fc1 or w12)")


def load_vit(path: str | Path) -> ViT:
    """The network of a DINOv2 weights file (official key names), in eval mode."""
    sd = read_state_dict(path)
    net = ViT(shape_of(sd))
    net.load_state_dict(sd, strict=True)
    return net.eval()


def weights_file(name: str, given: str | Path | None) -> Path:
    """The weights file of extractor `name`: `given`, else where torch.hub keeps the official
    one (`$TORCH_HOME/hub/checkpoints/`). Checked here, before any stage work: a missing or
    unreadable file, or one of another official size, is one line saying what to fetch."""
    official = MODELS[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / official.file
    path = Path(given) if given else cached
    fetch = f"download {official.url} to {path}" + (
        f" (or to {cached} with eval.feature_weights: null)"
        if given
        else " (or anywhere, and set eval.feature_weights to its path)"
    )
    if not path.is_file():
        raise MetricError(f"{name}: no weights file {path}; {fetch}")
    try:
        shape = shape_of(read_state_dict(path))
    except Exception as exc:
        raise MetricError(f"{name}: cannot read {path} ({_one_line(exc)}); {fetch}") from None
    for other_name, other in MODELS.items():
        if (shape.width, shape.depth) == (other.width, other.depth) and other != official:
            raise MetricError(
                f"{name}: {path} holds the {other.arch} weights (use eval.feature_extractor: "
                f"{other_name}); {fetch}"
            )
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


# ------------------------------------------------------------------ torch-fidelity glue
def register() -> None:
    """Register every name of `MODELS` with torch-fidelity (once per process)."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    for name in MODELS:
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, _extractor_class())


@functools.cache
def _extractor_class() -> type:
    """torch-fidelity's DINOv2 extractor with its torch.hub loading replaced by a file."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    class FeatureExtractorDinoV2File(FeatureExtractorDinoV2):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            FeatureExtractorBase.__init__(self, name, features_list)
            self.feature_extractor_internal_dtype = torch.float32
            self.model = load_vit(weights_file(name, feature_extractor_weights_path))
            self.requires_grad_(False)
            self.eval()

    return FeatureExtractorDinoV2File
