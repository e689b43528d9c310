"""What the model's outputs mean for ``data.task``, and the loss that trains them.

* ``binary``: one output per class, softmax + cross-entropy; the score is P(``data.abnormal``).
* ``multiclass``: the same head and loss; every class's probability is kept (one-vs-rest metrics),
  and with ``data.normal`` the "any finding" score is ``1 - P(normal)``.
* ``multilabel``: one output per finding, sigmoid + binary cross-entropy per finding; unknown targets
  (NaN) are masked out of the loss, and ``train.pos_weight`` weighs each finding's positives by its
  negatives/positives ratio in the training split. The "any finding" score is the highest finding
  probability, its label "any finding present".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config


@dataclass(frozen=True)
class Head:
    task: str
    names: tuple[str, ...]
    abnormal: int | None = None  # binary: index of the positive class
    normal: int | None = None  # multiclass: index of the normal class (data.normal)
    pos_weight: tuple[float, ...] | None = None  # multilabel: per-finding BCE positive weight

    @property
    def multi(self) -> bool:
        """Several scores per sample (multiclass, multilabel) rather than one."""
        return self.task != "binary"

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """The batch's summed loss (per sample: cross-entropy, or the mean BCE over its known findings)."""
        if self.task != "multilabel":
            y = torch.as_tensor(batch["label"], device=device).long()
            return nn.functional.cross_entropy(logits, y, reduction="sum")
        target = torch.as_tensor(batch["findings"], device=device).float()
        known = ~torch.isnan(target)
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=device)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.nan_to_num(target), pos_weight=weight, reduction="none")
        return ((loss * known).sum(dim=1) / known.sum(dim=1).clamp(min=1)).sum()

    def probabilities(self, logits: torch.Tensor) -> np.ndarray:
        """``(n, outputs)`` probabilities: softmax over classes, or one sigmoid per finding."""
        f = torch.sigmoid if self.task == "multilabel" else lambda t: torch.softmax(t, dim=1)
        return f(logits.float()).cpu().numpy().astype(np.float64)

    def targets(self, batch: dict[str, Any]) -> np.ndarray:
        """``(n, outputs)`` 0/1 targets (NaN = unknown): the findings, or the one-hot class."""
        if self.task == "multilabel":
            return np.asarray(batch["findings"], dtype=np.float64)
        return np.eye(len(self.names))[np.asarray(batch["label"]).astype(int)]

    def summary(self, probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one score and 0/1 label per sample that binary code paths see ("any finding")."""
        if self.task == "binary":
            return probs[:, self.abnormal], targets[:, self.abnormal].astype(int)
        if self.task == "multiclass":
            normal = 0 if self.normal is None else self.normal
            return 1.0 - probs[:, normal], (targets[:, normal] != 1).astype(int)
        return probs.max(axis=1), (np.nan_to_num(targets) == 1).any(axis=1).astype(int)

    def log_loss(self, probs: np.ndarray, targets: np.ndarray) -> float:
        """Mean validation loss of the task (cross-entropy, or masked mean BCE), unweighted."""
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        if self.task != "multilabel":
            return float(-np.mean(np.log((p * targets).sum(axis=1))))
        known = ~np.isnan(targets)
        t = np.nan_to_num(targets)
        bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        return float((bce * known).sum() / max(known.sum(), 1))


def head_for(cfg: Config, train_findings: np.ndarray | None = None) -> Head:
    """The head of ``cfg``; ``train_findings`` (the training split's ``(n, findings)`` targets, NaN =
    unknown) gives the positive weights when ``train.pos_weight`` is set."""
    data = cfg.data
    names = tuple(data.outputs)
    if data.task == "binary":
        return Head("binary", names, abnormal=names.index(data.abnormal))
    if data.task == "multiclass":
        return Head("multiclass", names, normal=None if data.normal is None else names.index(data.normal))
    weight = None
    if cfg.train.pos_weight:
        if train_findings is None:
            raise ValueError("train.pos_weight needs the training split's findings")
        pos = np.nansum(train_findings == 1, axis=0)
        neg = np.nansum(train_findings == 0, axis=0)
        weight = tuple(float(n / p) if p > 0 else 1.0 for p, n in zip(pos, neg, strict=True))
    return Head("multilabel", names, pos_weight=weight)
