"""The MLflow UI's runs table as medlora means it to be read: a shared view stored on the experiment.

MLflow 3's runs table shows only attribute columns until a user picks params and metrics by hand.
Its "shared view" mechanism reads a view state from the experiment tag
``mlflow.sharedViewState.<key>`` when the page is opened with ``?viewStateShareKey=<key>``; medlora
writes one (key ``medlora``) when it first logs to an experiment: the short params every run kind
has (``method``, ``backbone``, ``shots``, ``seed``), the headline test metrics, and the sweep
parents' best mean test AUROC per method. In the UI, "Override saved view" makes it the user's own.
"""

from __future__ import annotations

import json

from ..registry import METHODS

VIEW_KEY = "medlora"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
PARAMS = ("method", "backbone", "shots", "seed")
METRICS = ("test_auroc", "test_auroc_ci_low", "test_auroc_ci_high", "test_sensitivity", "test_specificity",
           "val_auroc", "train_seconds")


def columns() -> list[str]:
    """The selected columns, in MLflow's ``<type>.`<name>``` notation."""
    metrics = [*METRICS, *(f"best_test_auroc_mean.{m}" for m in METHODS)]
    return [f"params.`{p}`" for p in PARAMS] + [f"metrics.`{m}`" for m in metrics]


def view_state() -> str:
    """The tag value: the view state MLflow's runs table loads."""
    return json.dumps({"selectedColumns": columns()})


def table_path(experiment_id: str) -> str:
    """Where the view opens, relative to the UI's address (``http://127.0.0.1:5000/`` + this)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
