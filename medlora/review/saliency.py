"""Saliency maps for every timm family, adapted or not, and their overlay images.

:func:`saliency_map` picks the method by family (:mod:`medlora.models.families`): attention rollout
for plain ViTs (ViT, DeiT, DINOv2), Grad-CAM (Selvaraju et al., 2017) for every other model (EVA,
BEiT, Swin, CNNs), and Grad-CAM again should a rollout fail. An explanation never blocks an export:
the bundle omits what cannot be drawn and says so (:mod:`.build`).

Attention rollout (Abnar & Zuidema, 2020):
Each block's attention matrix is captured with a forward hook on ``attn.attn_drop`` (its input is
the softmaxed attention); timm's fused ``scaled_dot_product_attention`` never materialises the
matrix, so ``fused_attn`` is switched off during the rollout and restored afterwards. Heads are
averaged, the identity is added for the residual path, rows are renormalised and the blocks are
multiplied. The map is read from the class token's row when the model pools by that token, and
averaged over the patch tokens' rows otherwise (``global_pool="avg"``).

Grad-CAM: the gradient of the target class's logit weights the channels of the last stage's feature
map (timm's ``feature_info``: a CNN's or Swin's last stage, NCHW or NHWC); for token models the map is
the input of the last block (its patch tokens still reach a class-token head there), laid out on the
patch grid.

A volume ViT (:mod:`medlora.models.volume`) is explained the same way on its 3D patch grid: the map is
``(D, H, W)``, and :func:`display_pair` shows the slice holding the most of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def timm_vit(model: nn.Module) -> nn.Module:
    """The timm VisionTransformer inside a (possibly peft-wrapped) model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "blocks") or not hasattr(inner, "patch_embed"):
        raise TypeError(f"attention rollout needs a timm ViT (blocks, patch_embed); got {type(inner).__name__}")
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
    """A map in [0, 1] of where ``model`` looked in one preprocessed ``(C, H, W)`` image (``(H, W)``) or
    ``(C, D, H, W)`` volume (``(D, H, W)``)."""
    vit = timm_vit(model)
    model.eval()
    with _captured_attention(vit) as maps:
        model(image.unsqueeze(0))
    if len(maps) != len(vit.blocks):
        raise ValueError(f"captured {len(maps)} attention maps from {len(vit.blocks)} blocks")
    n = maps[0].shape[-1]
    rollout = torch.eye(n)
    for a in maps:
        a = a[0].float().mean(0) + torch.eye(n)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    prefix = int(getattr(vit, "num_prefix_tokens", 1))
    rows = rollout[:1] if getattr(vit, "global_pool", "token") == "token" and prefix else rollout[prefix:]
    patch = rows[:, prefix:].mean(0)
    grid = tuple(vit.patch_embed.grid_size)
    return _upsample(patch.reshape(1, *grid), image)


def _upsample(grid: torch.Tensor, image: torch.Tensor) -> np.ndarray:
    """A ``(1, h, w)`` or ``(1, d, h, w)`` map on the patch grid → the input's spatial size, in [0, 1]."""
    spatial = tuple(image.shape[-(grid.ndim - 1):])
    mode = "trilinear" if grid.ndim == 4 else "bilinear"
    heat = torch.nn.functional.interpolate(grid[None].float(), size=spatial, mode=mode, align_corners=False)[0, 0]
    heat = heat - heat.min()
    return (heat / heat.max().clamp_min(1e-12)).numpy()


def _last_stage(net: nn.Module) -> tuple[nn.Module, bool]:
    """(module, whether to hook its input) whose activation Grad-CAM explains."""
    blocks = getattr(net, "blocks", None)
    if getattr(net, "patch_embed", None) is not None and isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks):
        return blocks[-1], True  # token model: the tokens entering the last block
    info = getattr(net, "feature_info", None)
    if info:
        last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        return net.get_submodule(last), False
    raise TypeError(f"Grad-CAM needs a timm model with feature_info or blocks; got {type(net).__name__}")


def _spatial(net: nn.Module, act: torch.Tensor) -> torch.Tensor:
    """One sample's activation ``act`` as a (C, h, w) map ((C, d, h, w) on a volume ViT's grid)."""
    if act.ndim == 3 and getattr(net, "output_fmt", "NCHW") == "NHWC":
        return act.permute(2, 0, 1)
    if act.ndim == 3:
        return act
    if act.ndim == 2:  # tokens: drop class/register/distillation tokens, lay the rest on the patch grid
        prefix = int(getattr(net, "num_prefix_tokens", 1))
        patches = act[prefix:]
        side = int(round(patches.shape[0] ** 0.5))
        grid = tuple(getattr(getattr(net, "patch_embed", None), "grid_size", None) or (side, side))
        if int(np.prod(grid)) != patches.shape[0]:
            raise ValueError(f"cannot lay {patches.shape[0]} tokens on a {grid} patch grid")
        return patches.T.reshape(-1, *grid)
    raise ValueError(f"cannot map an activation of shape {tuple(act.shape)} onto the image")


def grad_cam(model: nn.Module, image: torch.Tensor, target: int | None = None) -> np.ndarray:
    """A ``(H, W)`` Grad-CAM map in [0, 1] for class ``target`` (default: the predicted class) of one
    preprocessed ``(C, H, W)`` image, on any timm model (peft-wrapped or not); ``(D, H, W)`` for a volume."""
    net = model.get_base_model() if hasattr(model, "get_base_model") else model
    module, use_input = _last_stage(net)
    model.eval()
    acts: list[torch.Tensor] = []
    if use_input:
        handle = module.register_forward_pre_hook(lambda _m, inp: acts.append(inp[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _inp, out: acts.append(out))
    try:
        with torch.enable_grad():
            x = image.unsqueeze(0).detach().float().requires_grad_(True)
            logits = model(x)
            cls = int(logits[0].argmax()) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, cls], acts[-1])
    finally:
        handle.remove()
    fmap, weights = _spatial(net, acts[-1][0].detach()), _spatial(net, grad[0])
    axes = tuple(range(1, weights.ndim))
    cam = torch.relu((weights.mean(dim=axes, keepdim=True) * fmap).sum(0)).float()
    return _upsample(cam[None], image)


ROLLOUT, GRAD_CAM = "attention rollout", "Grad-CAM"


def saliency_map(model: nn.Module, image: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, str]:
    """``(map, method)``: attention rollout for a plain ViT, Grad-CAM for every other family (and for a
    ViT whose rollout fails)."""
    from ..models.families import family_of

    if family_of(model).saliency == ROLLOUT:
        try:
            return attention_rollout(model, image), ROLLOUT
        except (TypeError, ValueError) as err:  # not a model rollout can read
            log.info("attention rollout failed (%s); using Grad-CAM", err)
    return grad_cam(model, image, target), GRAD_CAM


def display_image(image: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """The first channel of a normalised input, back in [0, 1] for display."""
    grey = image[0].numpy() * std[0] + mean[0]
    return np.clip(grey, 0.0, 1.0)


def display_pair(image: torch.Tensor, heat: np.ndarray, mean: list[float], std: list[float],
                 ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(image, map, where)`` to draw: a 2D input as it is (``where`` None); for a ``(C, D, H, W)`` volume,
    the slice holding the most saliency and its map, ``where`` naming it (``slice 5/16``). Slices of one value
    throughout (empty space above or below the anatomy) show a reviewer nothing and are passed over, unless
    the whole volume is such."""
    shown = display_image(image, mean, std)
    if shown.ndim == 2:
        return shown, heat, None
    flat = shown.reshape(shown.shape[0], -1)
    mass = np.asarray(heat, dtype=np.float64).reshape(heat.shape[0], -1).sum(1)
    showing = flat.max(1) - flat.min(1) > 1e-6
    z = int(np.where(showing, mass, -np.inf).argmax()) if showing.any() else int(mass.argmax())
    return shown[z], heat[z], f"slice {z + 1}/{shown.shape[0]}"


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
