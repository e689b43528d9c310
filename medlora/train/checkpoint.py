"""Epoch checkpoints of one training run, so an interrupted run continues where it stopped.

After every finished epoch :func:`save` writes, atomically, everything the next epoch depends on:
the trainable weights, the optimizer and scheduler, the random states (torch, numpy, Python, the
loader's shuffling generator and the batch augmenter's), the best epoch's weights and validation
predictions and the history. :func:`load` puts it all back, so a resumed run computes the same
epochs an uninterrupted one would have.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1


@dataclass
class LoopState:
    """What the training loop carries from one epoch to the next."""

    epoch: int = -1  # the last finished epoch
    best_epoch: int = -1
    best_val_auroc: float = -float("inf")
    best_loss: float = float("inf")
    bad_epochs: int = 0
    images: int = 0
    train_time: float = 0.0
    data_time: float = 0.0
    history: list[Any] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_val: Any = None


def _generators(loader: Any, augment: Any) -> dict[str, torch.Generator]:
    gens = {}
    if getattr(loader, "generator", None) is not None:
        gens["loader"] = loader.generator
    if getattr(augment, "generator", None) is not None:
        gens["augment"] = augment.generator
    return gens


def save(path: Path, state: LoopState, trainable: dict[str, torch.Tensor], optimizer: Any, scheduler: Any,
         loader: Any = None, augment: Any = None) -> None:
    """Write the checkpoint of ``state`` after its epoch (to a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "state": state, "trainable": {k: v.detach().cpu() for k, v in trainable.items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                **{k: g.get_state() for k, g in _generators(loader, augment).items()}},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path, trainable: dict[str, torch.Tensor], optimizer: Any, scheduler: Any, loader: Any = None,
         augment: Any = None) -> LoopState:
    """Restore a checkpoint written by :func:`save` into the given objects; returns the loop state."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)  # medlora's own file
    with torch.no_grad():
        for k, v in payload["trainable"].items():
            trainable[k].copy_(v)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    for name, g in _generators(loader, augment).items():
        if name in rng:
            g.set_state(rng[name])
    return payload["state"]
