"""One-class anomaly mode: fitted on normal studies only, it still finds the phantom nodules."""

import numpy as np
import pandas as pd
import pytest

from medlora.errors import InputError
from medlora.models.anomaly import AnomalyScorer


@pytest.mark.parametrize("kind", ["knn", "mahalanobis"])
def test_scorer_ranks_outliers_above_normals(kind):
    rng = np.random.default_rng(0)
    centre = np.full(16, 3.0)  # embeddings are not centred at the origin
    normal = rng.normal(size=(200, 16)) + centre
    inliers = rng.normal(size=(50, 16)) + centre
    outliers = rng.normal(size=(50, 16)) + centre + np.r_[8.0, -8.0, np.zeros(14)]
    scorer = AnomalyScorer(kind, k=5).fit(normal)
    s_in, s_out = scorer.score(inliers), scorer.score(outliers)
    assert s_out.mean() > s_in.mean()
    assert (s_out[:, None] > s_in[None, :]).mean() > 0.9  # AUROC of the scores


def test_scorer_errors():
    with pytest.raises(InputError, match="at least 2 normal"):
        AnomalyScorer().fit(np.zeros((1, 4)))
    with pytest.raises(InputError, match="not been fitted"):
        AnomalyScorer().score(np.zeros((1, 4)))
    with pytest.raises(InputError, match="allowed: knn, mahalanobis"):
        AnomalyScorer("lof").fit(np.zeros((3, 4)))


@pytest.mark.parametrize("score", ["knn", "mahalanobis"])
def test_oneclass_pipeline_detects_lesions(phantom_root, tmp_path, score, tiny_cfg):
    from mlflow import MlflowClient

    from pipelines.oneclass import run

    tiny_config = tiny_cfg
    cfg = tiny_config(phantom_root, tmp_path, pipeline="oneclass", **{"oneclass.score": score})
    summary = run(cfg, tmp_path / "out")
    assert summary.metrics["test_auroc"] > 0.8, summary.metrics["test_auroc"]  # chance is 0.5
    run_ = MlflowClient(cfg.tracking.uri).get_run(summary.run_id)
    assert run_.data.metrics["test_auroc"] == pytest.approx(summary.metrics["test_auroc"])
    assert "test_brier" not in run_.data.metrics  # distances are not probabilities
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert set(preds["split"]) == {"val", "test"}


def test_oneclass_on_lora_adapted_features(finished_run, tmp_path, tiny_cfg):
    """Features after LoRA adaptation: the adapter of the session's finished run on its verified base."""
    from pipelines.oneclass import run

    tiny_config = tiny_cfg
    out, cfg, _ = finished_run
    # the adapter's own split: no test study was seen in training
    cfg1 = tiny_config(cfg.data.root, tmp_path, pipeline="oneclass", **{"oneclass.adapter": str(out),
                                                                         "data.split.file": str(cfg.data.split.file)})
    summary = run(cfg1, tmp_path / "out")
    assert summary.metrics["test_auroc"] > 0.8


def test_oneclass_refuses_a_multilabel_task_before_any_work(tmp_path, tiny_cfg):
    """One-class mode scores one normal-vs-abnormal distance: a multi-label config is refused at load
    time, naming both keys, rather than failing after features were extracted."""
    from medlora.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pipeline oneclass .* needs data\.task binary, not multilabel"):
        tiny_cfg(tmp_path / "none", tmp_path, pipeline="oneclass",
                 **{"data.task": "multilabel", "data.findings": "[nodule, effusion]"})
