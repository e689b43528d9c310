"""Attention rollout (Abnar & Zuidema, 2020) on a timm ViT, adapted or not, and its overlay image.

Each block's attention matrix is captured with a forward hook on ``attn.attn_drop`` (its input is
the softmaxed attention); timm's fused ``scaled_dot_product_attention`` never materialises the
matrix, so ``fused_attn`` is switched off during the rollout and restored afterwards. Heads are
averaged, the identity is added for the residual path, rows are renormalised and the blocks are
multiplied. The map is read from the class token's row when the model pools by that token, and
averaged over the patch tokens' rows otherwise (``global_pool="avg"``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MedloraError

log = logging.getLogger(__name__)


def timm_vit(model: nn.Module) -> nn.Module:
    """The timm VisionTransformer inside a (possibly peft-wrapped) model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "blocks") or not hasattr(inner, "patch_embed"):
        raise MedloraError(f"attention rollout needs a timm ViT (blocks, patch_embed); got {type(inner).__name__}")
    return inner


@contextmanager
def _captured_attention(vit: nn.Module) -> Iterator[list[torch.Tensor]]:
    maps: list[torch.Tensor] = []
    handles, fused = [], []
    for block in vit.blocks:
        fused.append(getattr(block.attn, "fused_attn", False))
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, inp, _out: maps.append(inp[0].detach())))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()
        for block, f in zip(vit.blocks, fused, strict=True):
            block.attn.fused_attn = f


@torch.inference_mode()
def attention_rollout(model: nn.Module, image: torch.Tensor) -> np.ndarray:
    """A ``(H, W)`` map in [0, 1] of where ``model`` looked in one preprocessed ``(C, H, W)`` image."""
    vit = timm_vit(model)
    model.eval()
    with _captured_attention(vit) as maps:
        model(image.unsqueeze(0))
    if len(maps) != len(vit.blocks):
        raise MedloraError(f"captured {len(maps)} attention maps from {len(vit.blocks)} blocks")
    n = maps[0].shape[-1]
    rollout = torch.eye(n)
    for a in maps:
        a = a[0].float().mean(0) + torch.eye(n)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    prefix = int(getattr(vit, "num_prefix_tokens", 1))
    rows = rollout[:1] if getattr(vit, "global_pool", "token") == "token" and prefix else rollout[prefix:]
    patch = rows[:, prefix:].mean(0)
    gh, gw = vit.patch_embed.grid_size
    grid = patch.reshape(1, 1, gh, gw)
    heat = torch.nn.functional.interpolate(grid, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    heat = heat - heat.min()
    return (heat / heat.max().clamp_min(1e-12)).numpy()


def display_image(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """The first channel of a normalised input, back in [0, 1] for display."""
    grey = image[0].numpy() * std[0] + mean[0]
    return np.clip(grey, 0.0, 1.0)


def save_overlay(image: np.ndarray, heat: np.ndarray, path: Path, title: str) -> Path:
    """Render the image with the heat map over it as a PNG: pixels and a title only, no metadata."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path
