"""The task heads: masked multi-label loss, positive weights from the training split, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlora.config import config_from_dict
from medlora.train.head import Head, head_for


def test_unknown_targets_get_no_gradient_and_are_not_negatives():
    head = Head("multilabel", ("a", "b"))
    logits = torch.zeros(2, 2, requires_grad=True)
    batch = {"findings": torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "label": torch.tensor([1, 1])}
    head.loss_sum(logits, batch, torch.device("cpu")).backward()
    assert logits.grad[0, 1] == 0.0  # masked
    assert logits.grad[0, 0] < 0 and logits.grad[1, 0] > 0 and logits.grad[1, 1] < 0
    # per sample: the mean BCE over its known findings, summed over the batch
    want = 2 * float(torch.log(torch.tensor(2.0)))
    assert head.loss_sum(torch.zeros(2, 2), batch, torch.device("cpu")).item() == pytest.approx(want)


def test_positive_weights_come_from_the_training_split(tmp_path):
    cfg = config_from_dict({"data": {"root": str(tmp_path), "task": "multilabel", "findings": ["a", "b"]},
                            "train": {"pos_weight": True}})
    train = np.array([[1, 0], [0, 0], [0, np.nan], [0, 1], [np.nan, 0]], dtype=float)
    head = head_for(cfg, train)
    assert head.pos_weight == (3.0, 3.0)  # a: 1 positive, 3 negatives; b: 1 positive, 3 negatives (NaN ignored)
    weighted = head.loss_sum(torch.zeros(1, 2), {"findings": torch.tensor([[1.0, 0.0]])}, torch.device("cpu"))
    plain = Head("multilabel", ("a", "b")).loss_sum(torch.zeros(1, 2), {"findings": torch.tensor([[1.0, 0.0]])},
                                                    torch.device("cpu"))
    assert weighted.item() == pytest.approx(plain.item() * 2)  # (3 log2 + log2) / 2 vs (log2 + log2) / 2


def test_pos_weight_is_refused_outside_multilabel(tmp_path):
    from medlora.errors import ConfigError

    with pytest.raises(ConfigError, match="train.pos_weight applies to data.task multilabel"):
        config_from_dict({"data": {"root": str(tmp_path)}, "train": {"pos_weight": True}})


@pytest.mark.parametrize(
    ("task", "normal", "want_score", "want_label"),
    [("multilabel", None, [0.9, 0.7], [1, 0]), ("multiclass", 0, [0.8, 0.3], [1, 0])],
)
def test_any_finding_summary(task, normal, want_score, want_label):
    head = Head(task, ("n", "x", "y"), normal=normal)
    probs = np.array([[0.2, 0.9, 0.1], [0.7, 0.4, 0.2]])
    targets = np.array([[0, 1, np.nan], [0, 0, 0]]) if task == "multilabel" else np.array([[0, 1, 0], [1, 0, 0]])
    score, label = head.summary(probs, targets)
    np.testing.assert_allclose(score, want_score)
    assert label.tolist() == want_label


def test_training_findings_come_from_any_training_loader():
    from torch.utils.data import DataLoader, Subset

    from medlora.experiment.train_eval import train_findings
    from medlora.train.features import FeatureDataset, FeatureSet

    findings = np.array([[1, 0], [0, np.nan], [0, 1], [1, 1]], dtype=np.float32)
    feats = FeatureSet(torch.zeros(4, 3), np.array([1, 0, 1, 1]), {"sample_id": list("abcd"), "study_key": list("abcd"),
                                                                    "patient_key": list("abcd")}, findings=findings)
    ds = FeatureDataset(feats)
    assert ds[1]["findings"][0] == 0 and np.isnan(ds[1]["findings"][1])  # cached features carry the targets
    np.testing.assert_array_equal(train_findings(DataLoader(ds)), findings)
    np.testing.assert_array_equal(train_findings(DataLoader(Subset(ds, [3, 0]))), findings[[3, 0]])

    class Items(torch.utils.data.Dataset):  # like MONAI's datasets: the raw items in .data
        data = [{"findings": row} for row in findings]

    np.testing.assert_array_equal(train_findings(DataLoader(Subset(Items(), [2]))), findings[[2]])


def test_fit_and_predict_train_a_multilabel_head_with_unknown_targets():
    """The training loop with a multi-label head: the masked loss falls, predictions carry every
    finding's probability and target, early stopping reads the mean AUROC over findings."""
    from torch.utils.data import DataLoader

    from medlora.config import TrainConfig
    from medlora.evaluate.findings import mean_auroc, study_matrix
    from medlora.train.inference import predict
    from medlora.train.loop import fit

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.float32)
    y[rng.random(y.shape) < 0.2] = np.nan  # unknown targets
    items = [{"image": torch.from_numpy(x[i]), "label": int(np.nan_to_num(y[i]).any()), "findings": y[i],
              "sample_id": f"s{i}", "study_key": f"st{i}", "patient_key": f"p{i}"} for i in range(120)]
    head = Head("multilabel", ("a", "b", "c"))
    model = torch.nn.Linear(6, 3)
    train, val = DataLoader(items[:80], batch_size=16, shuffle=True), DataLoader(items[80:], batch_size=16)
    result = fit(model, train, val, TrainConfig(epochs=15, lr=0.05, patience=15), torch.device("cpu"), 0,
                 val_metric=lambda p: mean_auroc(study_matrix(p.frame(), head.names)), head=head)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best_val_auroc > 0.9
    pred = predict(model, val, torch.device("cpu"), 0, head)
    assert pred.scores.shape == (40, 3) and np.isnan(pred.targets).sum() == np.isnan(y[80:]).sum()
    np.testing.assert_allclose(pred.score, pred.scores.max(axis=1))
    assert {"score.a", "label.c"} <= set(pred.frame().columns)
