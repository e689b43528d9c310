"""Batched inference: a model and a loader in, per-sample abnormality scores out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..device import autocast_dtype


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

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"sample_id": self.sample_id, "study_key": self.study_key, "patient_key": self.patient_key,
                             "label": self.label, "score": self.score})


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device, abnormal_index: int) -> Predictions:
    """Run ``model`` over ``loader`` in eval mode; softmax probability of the abnormal class."""
    model.eval()
    dtype = autocast_dtype(device)
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
