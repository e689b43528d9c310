"""Train the classifier head on standardised features, then fold the standardisation into it.

A pretrained backbone's pre-logits features are far from unit scale: a masked autoencoder's have a few
dimensions hundreds of times larger than the rest, and the informative ones can be among the small.
AdamW moves every weight of a linear head by about the learning rate per step, so on raw features the
large dimensions dominate the logits and the small ones barely move: the head (and with it LoRA, whose
gradient flows through it) trains badly. He et al. (2022) put a BatchNorm without affine parameters in
front of the linear head for the same reason.

Here the features' mean and spread over the training images are measured once before training
(:func:`medlora.train.standardize.feature_moments`), and a forward pre-hook on each head
:class:`~torch.nn.Linear` standardises its input: the head's trainable weights live in standardised
space. The head's initial weights are taken as they are, now applied to unit-scale inputs (the scale
timm initialises a head for). :meth:`StandardizedHeads.fold` ends it when training ends: ``W = W'/s``,
``b = b' − W·μ``, hook removed. What is saved, exported and reloaded is then the plain timm head,
computing what the standardised one did, and plain timm + peft reproduce the scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .backbone import head_names

_PEFT_COPY = re.compile(r"\.modules_to_save\.[^.]+")


@dataclass
class Moments:
    """Per-feature mean and spread of one head's input."""

    mean: torch.Tensor  # (in_features,) float32
    scale: torch.Tensor  # (in_features,) float32, sqrt(variance + eps)


class Standardize:
    """Forward pre-hook: ``x → (x − mean) / scale`` on the head's input."""

    def __init__(self, moments: Moments) -> None:
        self.mean, self.scale = moments.mean, moments.scale
        self._on: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # copies per (device, dtype), made once

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        key = (x.device, x.dtype)
        if key not in self._on:
            self._on[key] = (self.mean.to(x), self.scale.to(x))
        mean, scale = self._on[key]
        return ((x - mean) / scale, *args[1:])


def head_linears(model: nn.Module) -> list[nn.Linear]:
    """The trainable linear classifier layer(s) of ``model``: timm's head(s) (``head``, ``head.fc``,
    ``head``+``head_dist``), inside peft's ``modules_to_save`` copy for LoRA; the model itself when it is
    a linear head; the ``head``/``head_dist`` of a linear probe's two-token head. Empty when there is none."""
    if isinstance(model, nn.Linear):
        return [model] if model.weight.requires_grad else []
    names: set[str] = {"head", "head_dist"}
    for m in model.modules():
        if getattr(m, "pretrained_cfg", None) is not None:
            names = set(head_names(m))
            break
    found = []
    for qual, m in model.named_modules():
        if not isinstance(m, nn.Linear) or not m.weight.requires_grad:
            continue
        name = _PEFT_COPY.sub("", qual)
        if any(name == n or name.endswith("." + n) for n in names):
            found.append(m)
    return found


class StandardizedHeads:
    """Standardising hooks on head layers (weights untouched); :meth:`fold` takes them out again, folding
    the standardisation into the weights."""

    def __init__(self, linears: list[nn.Linear], moments: list[Moments]) -> None:
        # a layer without a bias cannot absorb the centring: it is only scaled
        moments = [m if layer.bias is not None else Moments(torch.zeros_like(m.mean), m.scale)
                   for layer, m in zip(linears, moments, strict=True)]
        self.linears, self.moments = linears, moments
        self.handles = [layer.register_forward_pre_hook(Standardize(m)) for layer, m in zip(linears, moments, strict=True)]

    def fold(self) -> None:
        """Back to plain linear layers computing the same function; idempotent."""
        with torch.no_grad():
            for layer, mom, handle in zip(self.linears, self.moments, self.handles, strict=True):
                handle.remove()
                mean, scale = mom.mean.to(layer.weight), mom.scale.to(layer.weight)
                layer.weight.div_(scale)
                if layer.bias is not None:
                    layer.bias.sub_(layer.weight @ mean)
        self.handles, self.linears, self.moments = [], [], []
