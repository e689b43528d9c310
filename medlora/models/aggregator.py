"""Study-level models: a timm encoder per slice, gated-attention pooling over the slices of a study.

``preprocess.view.aggregate: attention`` trains on studies, not slices. Each slice (view, image) of a
study is encoded by the timm model into its pooled feature ``h_i`` (timm's pre-logits output,
``forward_head(forward_features(x), pre_logits=True)``: the same vector its own head would read),
and a small trainable pooling turns the study's features into one representation and one output
per class/finding. The pooling is the gated attention of Ilse, Tomczak & Welling (2018, "Attention-based
Deep Multiple Instance Learning")::

    a_i = softmax_i( w^T (tanh(V h_i) * sigmoid(U h_i)) )      z = sum_i a_i h_i      logits = C z

The features are layer-normalised first (a random or self-supervised base's features can be of any
scale). The weights ``a_i`` sum to one over the study's slices: they are what the model looked at,
and the review bundle and ``predict`` show them. A study of one slice is a bag of one (``a = 1``).

A batch of studies is one tensor ``(studies, slices, ...)``: shorter studies are padded with
slices that are NaN throughout, so the batch carries its own mask and passes through the training
loop, inference and augmentation like a batch of images. Only the real slices are encoded.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import head_names

__all__ = ["GatedAttentionPool", "StudyModel", "bag_mask", "pooled_features"]


def bag_mask(bags: torch.Tensor) -> torch.Tensor:
    """``(studies, slices)`` True for the real slices of a NaN-padded batch of bags ``(studies, slices, ...)``."""
    if bags.ndim < 3:
        raise ValueError(f"a batch of bags is (studies, slices, ...), got shape {tuple(bags.shape)}")
    return ~torch.isnan(bags.flatten(2)).any(-1)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's pre-logits vector of each image of ``x`` ``(n, C, H, W)`` → ``(n, d)`` (a peft model passes
    the calls through to the timm model it adapts)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def feature_dim(model: nn.Module) -> int:
    """The size of :func:`pooled_features` of a timm model."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) of ``(studies, slices, dim)`` features + a linear classifier."""

    def __init__(self, dim: int, outputs: int, hidden: int = 128) -> None:
        super().__init__()
        self.dim, self.outputs, self.hidden = dim, outputs, hidden
        self.norm = nn.LayerNorm(dim)
        self.attention_v = nn.Linear(dim, hidden)
        self.attention_u = nn.Linear(dim, hidden)
        self.attention_w = nn.Linear(hidden, 1, bias=False)  # a bias would cancel in the softmax
        self.classifier = nn.Linear(dim, outputs)

    def spec(self) -> dict[str, int]:
        """What rebuilds this module (with its state): ``GatedAttentionPool(**spec)``."""
        return {"dim": self.dim, "outputs": self.outputs, "hidden": self.hidden}

    def attend(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (studies, outputs), attention (studies, slices))`` of NaN-padded ``features``
        (or with an explicit ``mask``); padded slices get attention 0."""
        if features.ndim != 3 or features.shape[-1] != self.dim:
            raise ValueError(f"features must be (studies, slices, {self.dim}), got {tuple(features.shape)}")
        mask = bag_mask(features) if mask is None else mask
        if not bool(mask.any(1).all()):
            raise ValueError("every study of a batch needs at least one slice")
        h = self.norm(torch.nan_to_num(features.float()))
        score = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))).squeeze(-1)
        attention = torch.softmax(score.masked_fill(~mask, float("-inf")), dim=1)
        pooled = (attention.unsqueeze(-1) * h).sum(1)
        return self.classifier(pooled), attention

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.attend(features)[0]


def freeze_head(encoder: nn.Module) -> None:
    """Stop the timm classifier head(s) of ``encoder`` (peft's ``modules_to_save`` copy included) from
    training: the study's outputs come from the pooling."""
    inner = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    heads = head_names(inner)
    for name, p in encoder.named_parameters():
        parts = name.split(".")
        if any(".".join(parts[i:i + len(h.split("."))]) == h for h in heads for i in range(len(parts))):
            p.requires_grad = False


class StudyModel(nn.Module):
    """A timm model (adapted by LoRA, frozen or fully trainable) encoding each slice, pooled per study.

    ``encoder`` keeps its own classifier head, unused here and frozen, so that the adapter or probe
    exports of :mod:`medlora.bundle.layout` stay what they are; the pooling carries the study's outputs.
    At evaluation slices are encoded ``chunk`` at a time, so a long study does not need its whole
    activations at once.
    """

    def __init__(self, encoder: nn.Module, pool: GatedAttentionPool, chunk: int = 64) -> None:
        super().__init__()
        self.encoder, self.pool, self.chunk = encoder, pool, chunk
        freeze_head(encoder)


    def encode(self, bags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(studies, slices, dim)`` features of the real slices (zeros where padded)."""
        real = bags[mask]
        if self.training or torch.is_grad_enabled():
            feats = pooled_features(self.encoder, real)
        else:
            feats = torch.cat([pooled_features(self.encoder, real[i:i + self.chunk])
                               for i in range(0, len(real), self.chunk)])
        out = feats.new_zeros((*mask.shape, feats.shape[-1]))
        out[mask] = feats
        return out

    def attend(self, bags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, attention)`` of a NaN-padded batch of bags ``(studies, slices, C, H, W)``."""
        mask = bag_mask(bags)
        return self.pool.attend(self.encode(bags, mask), mask)

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        return self.attend(bags)[0]
