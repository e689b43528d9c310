"""The MLflow UI's runs table as medlora means it to be read: a shared view stored on the experiment.

MLflow 3's runs table shows only attribute columns until a user picks params and metrics by hand.
Its "shared view" mechanism reads a view state from the experiment tag
``mlflow.sharedViewState.<key>`` when the page is opened with ``?viewStateShareKey=<key>``; medlora
writes one (key ``medlora``) when it first logs to an experiment: the short params every run kind
has (``method``, ``backbone``, ``shots``, ``seed``), the headline test metrics, and the sweep
parents' best mean test AUROC per method. The headline metrics depend on the task (``data.task``):
binary runs log ``test_auroc`` (sweep parents ``best_test_auroc_mean.<method>``), multi-class and
multi-label runs the macro AUROC ``test_auroc_macro`` (``best_test_auroc_macro_mean.<method>``).
The view holds the columns of the tasks the experiment has runs of: a first run of another task
extends medlora's view (:func:`updated_state`). In the UI, "Override saved view" makes it the
user's own; a view that is not one medlora wrote is never changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import combinations

from ..registry import METHODS

VIEW_KEY = "medlora"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
PARAMS = ("method", "backbone", "shots", "seed")
# headline metrics per kind of task, in column order; "binary" is data.task binary, "macro" multiclass/multilabel
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("test_auroc", "test_auroc_ci_low", "test_auroc_ci_high", "test_sensitivity", "test_specificity"),
    "macro": ("test_auroc_macro", "test_auroc_macro_ci_low", "test_auroc_macro_ci_high"),
}
COMMON_METRICS = ("val_auroc", "train_seconds")
SWEEP_BEST = {"binary": "best_test_auroc_mean", "macro": "best_test_auroc_macro_mean"}  # + ".<method>" on parents
KINDS = tuple(KIND_METRICS)


def kind_of(task: str) -> str:
    """The view's kind of a ``data.task``: ``binary``, or ``macro`` for multiclass and multilabel."""
    return "binary" if task == "binary" else "macro"


def columns(kinds: Iterable[str] = ("binary",)) -> list[str]:
    """The selected columns for runs of ``kinds``, in MLflow's ``<type>.`<name>``` notation."""
    chosen = [k for k in KINDS if k in set(kinds)]
    metrics = [m for k in chosen for m in KIND_METRICS[k]] + list(COMMON_METRICS)
    metrics += [f"{SWEEP_BEST[k]}.{m}" for k in chosen for m in METHODS]
    return [f"params.`{p}`" for p in PARAMS] + [f"metrics.`{m}`" for m in metrics]


def view_state(kinds: Iterable[str] = ("binary",)) -> str:
    """The tag value: the view state MLflow's runs table loads."""
    return json.dumps({"selectedColumns": columns(kinds)})


def updated_state(current: str | None, task: str) -> str | None:
    """The tag value to write before a run of ``task`` logs to an experiment whose tag is ``current``:
    medlora's view for that task when there is none, medlora's view extended with the task's columns
    when the experiment's view lacks them, None to leave it (it has them, or it is not medlora's view)."""
    kind = kind_of(task)
    if current is None:
        return view_state([kind])
    for n in range(1, len(KINDS) + 1):
        for kinds in combinations(KINDS, n):
            if current == view_state(kinds):
                return None if kind in kinds else view_state([*kinds, kind])
    return None  # a user's own view


def table_path(experiment_id: str) -> str:
    """Where the view opens, relative to the UI's address (``http://127.0.0.1:5000/`` + this)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
