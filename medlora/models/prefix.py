"""A ViT split at its first trainable block: the frozen prefix runs once per sample, the rest trains.

When LoRA adapts only the upper blocks (``model.lora.blocks``), everything below the first adapted
block (patch embedding, position embedding, the frozen blocks) maps an image to the same tokens in
every epoch, as long as the image itself does not change (no augmentation) and the prefix holds no
random layer (dropout, drop-path). :func:`frozen_prefix_depth` says how many blocks that is;
:func:`prefix_tokens` runs them; :class:`SuffixModel` is the trainable rest, taking those tokens
where the full model takes images. Its parameters are the model's own, so the adapter trained through
it is saved, merged and exported exactly as if the whole model had been trained.
"""

from __future__ import annotations

from torch import nn


def timm_model(model: nn.Module) -> nn.Module:
    """The timm model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _random(module: nn.Module) -> bool:
    for m in module.modules():
        if isinstance(m, nn.Dropout) and m.p > 0:
            return True
        if type(m).__name__ == "DropPath" and getattr(m, "drop_prob", 0) > 0:
            return True
    return False


def frozen_prefix_depth(model: nn.Module) -> int:
    """How many leading blocks of a timm ViT are frozen and deterministic, with a frozen, deterministic
    embedding below them (0 when the model is not timm's ``VisionTransformer`` — whose
    ``forward_features`` :func:`prefix_tokens` and :class:`SuffixModel` follow — or its first block trains)."""
    from timm.models.vision_transformer import VisionTransformer

    vit = timm_model(model)
    if not isinstance(vit, VisionTransformer):
        return 0
    blocks = getattr(vit, "blocks", None)
    embed = [getattr(vit, name, None) for name in ("patch_embed", "pos_drop", "patch_drop", "norm_pre")]
    if not isinstance(blocks, nn.Sequential) or any(m is None for m in embed) or getattr(vit, "grad_checkpointing", False):
        return 0
    tokens = [getattr(vit, n) for n in ("cls_token", "pos_embed", "reg_token", "dist_token")
              if isinstance(getattr(vit, n, None), nn.Parameter)]
    if any(p.requires_grad for p in [*tokens, *(p for m in embed for p in m.parameters())]) or any(map(_random, embed)):
        return 0
    depth = 0
    for block in blocks:
        if any(p.requires_grad for p in block.parameters()) or _random(block):
            break
        depth += 1
    return depth if depth < len(blocks) else 0


def prefix_tokens(model: nn.Module, x, depth: int):
    """Tokens after the first ``depth`` blocks (timm's ``forward_features`` up to there)."""
    vit = timm_model(model)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    return vit.blocks[:depth](x)


class SuffixModel(nn.Module):
    """Blocks ``depth:`` + final norm + head of ``model``, applied to :func:`prefix_tokens` output."""

    def __init__(self, model: nn.Module, depth: int) -> None:
        super().__init__()
        self.inner, self.depth = model, depth

    def forward(self, tokens):
        vit = timm_model(self.inner)
        return vit.forward_head(vit.norm(vit.blocks[self.depth:](tokens)))
