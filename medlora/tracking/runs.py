"""Reading runs back from the tracking store: every page of a search, the children of a parent run."""

from __future__ import annotations

from typing import Any


def search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run of ``experiment_id`` matching ``filter_string`` (all result pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def child_runs(client: Any, parent: Any) -> list[Any]:
    """All nested runs of ``parent`` (any status)."""
    return search_all(client, parent.info.experiment_id, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
