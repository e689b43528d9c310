"""Masked autoencoder around a timm VisionTransformer (He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners").

Each image is cut into the ViT's patches; a random ``mask_ratio`` of them is hidden per image. The
encoder, the timm model itself (its patch embedding, position embedding, prefix tokens, blocks and
norm), sees **only the visible patches**: the masked ones are dropped before the first block, which
is what makes a step cheaper than a forward+backward on the whole image. A light decoder (a few
narrow transformer blocks) receives the encoded visible tokens plus a shared learned mask token at
every hidden position, with fixed 2D sin-cos position embeddings, and predicts every patch's pixels;
the loss is the mean squared error on the **masked patches only**, against pixels normalised by
each patch's own mean and variance (``norm_pix_loss``, the paper's better-performing target).

After pretraining, :attr:`MaskedAutoencoder.encoder` is an ordinary timm model: its state (without
the unused classifier head) is the base that ``model.weights`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .families import check_image_size


@dataclass
class MaeOutput:
    loss: torch.Tensor  # scalar: mean over masked patches
    pred: torch.Tensor  # (B, N, p*p*C): predicted (normalised, with norm_pix_loss) pixels of every patch
    mask: torch.Tensor  # (B, N): 1 where the patch was hidden from the encoder


def patch_geometry(encoder: nn.Module, image_size: int) -> tuple[int, tuple[int, int]]:
    """(patch size, patch grid) of a timm ViT at ``image_size``; an image size the patch size does not
    divide, or one the model was not built for, is a :class:`ConfigError` naming both values."""
    embed = getattr(encoder, "patch_embed", None)
    if embed is None or not hasattr(encoder, "blocks") or not hasattr(encoder, "_pos_embed"):
        raise ConfigError(f"masked-autoencoder pretraining needs a plain timm VisionTransformer "
                          f"(patch_embed, blocks); {type(encoder).__name__} is not one")
    ph, pw = embed.patch_size
    if ph != pw:
        raise ConfigError(f"masked-autoencoder pretraining needs square patches, got {ph}x{pw}")
    check_image_size(encoder, image_size)
    built = embed.img_size[0] if embed.img_size is not None else image_size
    if built != image_size and not getattr(encoder, "dynamic_img_size", False):
        raise ConfigError(f"preprocess.image_size={image_size} differs from the model's img_size={built} "
                          f"(model.kwargs.img_size); make them equal")
    return ph, (image_size // ph, image_size // ph)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, N, patch*patch*C)`` in the order timm's patch embedding flattens (row-major)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = patches.shape[0]
    x = patches.reshape(b, grid[0], grid[1], patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, grid[0] * patch, grid[1] * patch)


def random_mask(batch: int, n: int, mask_ratio: float, device: torch.device,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image random masking: (indices of the kept patches ``(B, K)``, ``ids_restore`` ``(B, N)``,
    mask ``(B, N)`` with 1 = hidden). ``K = round(N * (1 - mask_ratio))``, at least 1."""
    keep = max(1, int(round(n * (1 - mask_ratio))))
    noise = torch.rand(batch, n, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, n, device=device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Mean squared error per patch, averaged over the masked patches only."""
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred.float() - target.float()) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


class MaskedAutoencoder(nn.Module):
    """A timm ViT encoder on the visible patches + a light decoder that reconstructs the masked ones."""

    def __init__(self, encoder: nn.Module, image_size: int, mask_ratio: float = 0.75, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, norm_pix_loss: bool = True) -> None:
        from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
        from timm.models.vision_transformer import Block

        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ConfigError(f"pretrain.mask_ratio={mask_ratio} must lie strictly between 0 and 1")
        self.patch, self.grid = patch_geometry(encoder, image_size)
        self.encoder, self.mask_ratio, self.norm_pix_loss = encoder, mask_ratio, norm_pix_loss
        self.channels = encoder.patch_embed.proj.in_channels
        self.num_patches = self.grid[0] * self.grid[1]
        self.prefix = int(getattr(encoder, "num_prefix_tokens", 0))
        width = encoder.embed_dim
        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        pos = build_sincos2d_pos_embed(list(self.grid), dim=decoder_dim)  # (N, D), row-major like the patches
        self.register_buffer("decoder_pos", pos.reshape(1, self.num_patches, decoder_dim), persistent=False)
        self.decoder_blocks = nn.Sequential(*[Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                              for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * self.channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens ``(B, prefix + K, D)`` for the kept patches only."""
        enc = self.encoder
        x = enc._pos_embed(enc.patch_embed(images))  # prefix tokens + every patch, position added
        prefix, patches = x[:, : self.prefix], x[:, self.prefix:]
        visible = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))
        x = enc.norm_pre(torch.cat([prefix, visible], dim=1))
        return enc.norm(enc.blocks(x))

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Pixel predictions ``(B, N, p*p*C)`` of every patch from the visible tokens."""
        x = self.decoder_embed(latent)
        visible = x[:, self.prefix:]
        b, n = ids_restore.shape
        filler = self.mask_token.expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, filler], dim=1)
        full = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, full.shape[-1])) + self.decoder_pos
        x = self.decoder_blocks(torch.cat([x[:, : self.prefix], full], dim=1))
        return self.decoder_pred(self.decoder_norm(x))[:, self.prefix:]

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> MaeOutput:
        keep, ids_restore, mask = random_mask(images.shape[0], self.num_patches, self.mask_ratio, images.device,
                                              generator)
        pred = self.decode(self.encode(images, keep), ids_restore)
        loss = masked_loss(pred, patchify(images, self.patch), mask, self.norm_pix_loss)
        return MaeOutput(loss, pred, mask)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(visible ``(B, 1, H, W)``, masked input, reconstruction): 1 on the patches the encoder saw; the
        input with hidden patches zeroed; hidden patches predicted and visible ones copied. Normalised
        predictions are put back on each patch's own mean and spread, as the paper shows them."""
        out = self(images, generator)
        target = patchify(images, self.patch)
        pred = out.pred.float()
        if self.norm_pix_loss:
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        m = out.mask[..., None]
        masked = unpatchify(target * (1 - m), self.patch, self.channels, self.grid)
        recon = unpatchify(target * (1 - m) + pred * m, self.patch, self.channels, self.grid)
        visible = unpatchify((1 - m).expand(-1, -1, self.patch * self.patch), self.patch, 1, self.grid)
        return visible, masked, recon
