"""Batched inference: a model and a loader in, per-sample abnormality scores out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..device import autocast_dtype
from .head import Head


@dataclass
class Predictions:
    """Per-sample scores with their pseudonymous keys.

    ``score`` is P(abnormal); ``label`` is 1 for the abnormal class and 0 for any other, whatever
    the class order (e.g. BreastMNIST's malignant class is index 0); ``class_index`` keeps the
    original class.
    """

    sample_id: list[str]
    study_key: list[str]
    patient_key: list[str]
    label: np.ndarray
    score: np.ndarray
    class_index: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # multiclass / multilabel: per-output probabilities and 0/1 targets (NaN = unknown), one column per name
    names: tuple[str, ...] = ()
    scores: np.ndarray | None = None
    targets: np.ndarray | None = None

    def frame(self) -> pd.DataFrame:
        """One row per sample; with several outputs also ``score.<name>`` and ``label.<name>`` columns, and a
        column per ``extra``."""
        df = pd.DataFrame({"sample_id": self.sample_id, "study_key": self.study_key, "patient_key": self.patient_key,
                           "label": self.label, "score": self.score})
        if self.scores is not None and self.targets is not None:
            df = pd.concat([df, pd.DataFrame(self.scores, columns=[f"score.{n}" for n in self.names]),
                            pd.DataFrame(self.targets, columns=[f"label.{n}" for n in self.names])], axis=1)
        for name, values in self.extra.items():  # per-sample extras, e.g. a study model's slice ``attention``
            df[name] = values
        return df


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device, abnormal_index: int, head: Head | None = None,
            autocast: bool = True) -> Predictions:
    """Run ``model`` over ``loader`` in eval mode; softmax probability of the abnormal class, or with a
    multiclass/multilabel ``head`` every output's probability plus the "any finding" summary.
    ``autocast=False``: in fp32 whatever the device (a training run's validation and test)."""
    dtype = autocast_dtype(device) if autocast else None
    if head is not None and head.multi:
        return _predict_multi(model, loader, device, head, dtype)
    model.eval()
    ids, studies, patients, labels, scores = [], [], [], [], []
    for batch in loader:
        x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)  # plain tensor, not a MetaTensor
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        scores.append(torch.softmax(logits.float(), dim=1)[:, abnormal_index].cpu().numpy())
        labels.append(np.asarray(batch["label"]))
        ids += list(batch["sample_id"])
        studies += list(batch["study_key"])
        patients += list(batch["patient_key"])
    classes = np.concatenate(labels).astype(int)
    return Predictions(ids, studies, patients, (classes == abnormal_index).astype(int),
                       np.concatenate(scores).astype(np.float64), class_index=classes)


def _predict_multi(model: nn.Module, loader, device: torch.device, head: Head, dtype: torch.dtype | None) -> Predictions:
    model.eval()
    ids, studies, patients, labels, probs, targets = [], [], [], [], [], []
    for batch in loader:
        x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            probs.append(head.probabilities(model(x)))
        targets.append(head.targets(batch))
        labels.append(np.asarray(batch["label"]))
        ids += list(batch["sample_id"])
        studies += list(batch["study_key"])
        patients += list(batch["patient_key"])
    p, t = np.concatenate(probs), np.concatenate(targets)
    score, label = head.summary(p, t)
    return Predictions(ids, studies, patients, label, score, class_index=np.concatenate(labels).astype(int),
                       names=head.names, scores=p, targets=t)
