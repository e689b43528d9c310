"""A timm ViT that takes a whole volume: 3D patches in, the same transformer blocks, LoRA as usual.

``preprocess.view.kind: volume`` feeds each volume as one ``(C, D, H, W)`` sample (``D`` =
``preprocess.view.depth`` slices). The model is timm's own ``VisionTransformer`` built with
:class:`VolumePatchEmbed` as its ``embed_layer``: a ``Conv3d`` cuts the volume into patches of
``model.tubelet`` slices × patch size × patch size, so a volume of ``D × H × W`` becomes
``D/t · H/p · W/p`` tokens and everything after the patch embedding (position embedding, blocks,
pooling, head, the LoRA presets, peft's ``save_pretrained``) is unchanged.

A 2D base (hub, file, folder, or ``medlora pretrain``) is *inflated* when loaded
(:func:`inflate_state`), as I3D inflates 2D filters (Carreira & Zisserman, 2017):

* the patch kernel ``(E, C, p, p)`` is repeated over the ``t`` slices of a 3D patch and divided by
  ``t``, so a volume whose slices are all the same image embeds exactly as that image does in 2D;
* the 2D position embedding of the ``h × w`` grid is repeated for each of the ``D/t`` slabs, plus a
  fixed sine-cosine code of the slab's index (Vaswani et al., 2017) scaled to the 2D embedding's
  standard deviation, so tokens at the same place of different slabs are told apart while the base's
  spatial code is kept. Prefix tokens (class, registers) keep theirs.

Inflation is deterministic, so the base's ``state_sha256`` is that of the inflated model, and
:func:`medlora.models.backbone.rebuild_base` re-inflates the same file to the same tensors. A
randomly initialised volume ViT is timm's own initialisation of the 3D shapes.

``model.stem: conv`` replaces the one-convolution patchify by a convolutional stem
(:class:`VolumeConvStem`; Xiao et al., 2021, "Early convolutions help transformers see better"): 3×3×3
convolutions of stride 2, each followed by a GroupNorm and a GELU, halve the volume ``ceil(log2 p)``
times in-plane and ``ceil(log2 t)`` times along the slices, and a 1×1×1 convolution makes the tokens.
It gives a transformer trained from scratch a convolution's locality. Its weights are new, so it is
trained from random initialisation with the whole model (``method: full``); a 2D base has nothing to
inflate into it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig, PreprocessConfig
from ..errors import ConfigError

__all__ = ["STEMS", "VolumeConvStem", "VolumeInput", "VolumePatchEmbed", "inflate_state", "volume_input"]

STEMS = ("patch", "conv")  # model.stem: one Conv3d cutting patches, or a convolutional stem


@dataclass(frozen=True)
class VolumeInput:
    """The 3D geometry a volume ViT is built for: ``depth`` slices in, ``tubelet`` slices per patch, and
    the ``stem`` that turns the volume into tokens (``patch`` or ``conv``)."""

    depth: int
    tubelet: int
    stem: str = "patch"

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ConfigError(f"model.stem={self.stem!r}: expected one of {', '.join(STEMS)}")
        if self.depth % self.tubelet:
            raise ConfigError(f"preprocess.view.depth={self.depth} is not a multiple of the tubelet "
                              f"(model.tubelet={self.tubelet}, the slices of one 3D patch)")

    def to_dict(self) -> dict[str, Any]:
        """The base record's ``volume`` (``stem`` only where it is not the default patchify)."""
        out = asdict(self)
        if self.stem == "patch":
            del out["stem"]
        return out

    @classmethod
    def of(cls, record: dict[str, Any]) -> VolumeInput | None:
        """The geometry a base record (``medlora.json``'s ``base``) carries, None for a 2D base."""
        return cls(**record["volume"]) if record.get("volume") else None

    def embed_layer(self) -> Any:
        """timm's ``embed_layer`` argument for this geometry."""
        embed = VolumeConvStem if self.stem == "conv" else VolumePatchEmbed
        return partial(embed, depth=self.depth, tubelet=self.tubelet)


def volume_input(pre: PreprocessConfig, model: ModelConfig) -> VolumeInput | None:
    """The volume geometry a run's model takes (``preprocess.view.kind: volume``), else None (2D)."""
    if pre.view.kind != "volume":
        return None
    return VolumeInput(pre.view.depth, model.tubelet, model.stem)


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class VolumePatchEmbed(nn.Module):
    """timm's ``PatchEmbed`` for volumes: ``(N, C, D, H, W)`` → ``(N, D/t · H/p · W/p, E)`` tokens in
    slab-major order (the tokens of the first ``t`` slices first, each slab's in row-major order)."""

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int | tuple[int, int] = 16,
                 in_chans: int = 3, embed_dim: int = 768, norm_layer: Any = None, bias: bool = True,
                 dynamic_img_pad: bool = False, *, depth: int, tubelet: int, strict_img_size: bool = True,
                 output_fmt: str | None = None, flatten: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if dynamic_img_pad or not strict_img_size or output_fmt not in (None, "NCHW") or not flatten:
            raise ConfigError("preprocess.view.kind: volume takes one fixed volume size: this model's patch embedding "
                              "is dynamic or not flattened (dynamic_img_size, dynamic_img_pad, a Swin-like layout)")
        if depth % tubelet:
            raise ValueError(f"volume depth {depth} is not a multiple of the tubelet {tubelet}")
        self.img_size, self.patch_size = _pair(img_size), _pair(patch_size)
        self.depth, self.tubelet = int(depth), int(tubelet)
        self.grid_size = (self.depth // self.tubelet, self.img_size[0] // self.patch_size[0],
                          self.img_size[1] // self.patch_size[1])
        self.num_patches = math.prod(self.grid_size)
        self.strict_img_size, self.flatten, self.dynamic_img_pad = True, True, False
        self._make_tokens(in_chans, embed_dim, bias, device, dtype)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def _make_tokens(self, in_chans: int, embed_dim: int, bias: bool, device: Any, dtype: Any) -> None:
        kernel = (self.tubelet, *self.patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel, bias=bias, device=device,
                              dtype=dtype)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return max(self.patch_size) if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.depth, *self.img_size)
        if x.ndim != 5 or tuple(x.shape[2:]) != want:
            raise ValueError(f"a volume ViT built for {want} volumes got input of shape {tuple(x.shape)}; expected "
                             f"(N, C, {want[0]}, {want[1]}, {want[2]})")
        return self.norm(self._tokens(x).flatten(2).transpose(1, 2))


class VolumeConvStem(VolumePatchEmbed):
    """A convolutional stem in place of :class:`VolumePatchEmbed`'s one patchify convolution (same input,
    same slab-major token order): ``ceil(log2 p)`` in-plane and ``ceil(log2 t)`` depth halvings by 3×3×3
    convolutions of stride 2 (GroupNorm, GELU), widening towards ``embed_dim``, then a 1×1×1 convolution to
    ``embed_dim``. Its grid is ``ceil(n / 2**halvings)`` per axis: the patchify grid where ``p`` and ``t``
    are powers of two, or where rounding up gives the same count (28 px, patch 7 → 4 × 4)."""

    def _make_tokens(self, in_chans: int, embed_dim: int, bias: bool, device: Any, dtype: Any) -> None:
        plane = max(math.ceil(math.log2(p)) for p in self.patch_size)
        slices = math.ceil(math.log2(self.tubelet))
        levels = max(plane, slices)
        widths = [in_chans] + [max(16, embed_dim // 2 ** (levels - i)) for i in range(levels)]
        layers: list[nn.Module] = []
        for i in range(levels):
            stride = (2 if i < slices else 1, 2 if i < plane else 1, 2 if i < plane else 1)
            layers += [nn.Conv3d(widths[i], widths[i + 1], 3, stride=stride, padding=1, bias=False, device=device,
                                 dtype=dtype),
                       nn.GroupNorm(math.gcd(8, widths[i + 1]), widths[i + 1], device=device, dtype=dtype), nn.GELU()]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv3d(widths[-1], embed_dim, 1, bias=bias, device=device, dtype=dtype)
        self.grid_size = (math.ceil(self.depth / 2 ** slices), math.ceil(self.img_size[0] / 2 ** plane),
                          math.ceil(self.img_size[1] / 2 ** plane))
        self.num_patches = math.prod(self.grid_size)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))


def depth_code(slabs: int, dim: int) -> torch.Tensor:
    """``(slabs, dim)`` sine-cosine code of each slab's index (unit scale)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    angle = torch.arange(slabs, dtype=torch.float64)[:, None] * freq[None]
    code = torch.cat([angle.sin(), angle.cos()], 1)
    return torch.nn.functional.pad(code, (0, dim - code.shape[1])).float()


def inflate_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` of a 2D ViT made to fit the volume ViT ``model`` (see the module docstring); tensors
    that already fit, and every state of a 2D model, pass through unchanged."""
    embed = getattr(model, "patch_embed", None)
    if not isinstance(embed, VolumePatchEmbed) or isinstance(embed, VolumeConvStem):
        return state  # a conv stem has no 2D counterpart: fit_state names what does not fit
    out = dict(state)
    own = model.state_dict()
    kernel = out.get("patch_embed.proj.weight")
    if kernel is not None and kernel.ndim == 4:
        out["patch_embed.proj.weight"] = kernel.unsqueeze(2).repeat(1, 1, embed.tubelet, 1, 1) / embed.tubelet
    pos, want = out.get("pos_embed"), own.get("pos_embed")
    if pos is not None and want is not None and pos.shape != want.shape:
        out["pos_embed"] = _inflate_pos(pos, want.shape, embed.grid_size)
    return out


def _inflate_pos(pos: torch.Tensor, shape: torch.Size, grid: tuple[int, int, int]) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    slabs, h, w = grid
    prefix = shape[1] - slabs * h * w
    if prefix < 0 or pos.shape[1] < prefix or pos.ndim != 3:
        return pos  # not a 2D position embedding of this model: fit_state names the mismatch
    plane = pos[:, prefix:]
    side = math.isqrt(plane.shape[1])
    if side * side != plane.shape[1]:
        return pos
    if (side, side) != (h, w):  # another 2D input size: timm's own resampling first
        plane = resample_abs_pos_embed(plane, new_size=[h, w], old_size=[side, side], num_prefix_tokens=0)
    code = depth_code(slabs, plane.shape[-1]) * plane.float().std()
    volume = plane[:, None] + code[None, :, None].to(plane.dtype)  # (1, slabs, h*w, E)
    return torch.cat([pos[:, :prefix], volume.reshape(1, slabs * h * w, -1)], 1)
