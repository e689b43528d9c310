"""Claiming a sweep point before training it, so that no point is trained or counted twice.

Points that run away from the driver (Ray tasks, possibly on other machines, possibly a retry of a
task whose worker died) cannot be told apart by the driver's bookkeeping alone, so the tracking
store is the arbiter. A worker first creates the point's child run (RUNNING, tagged with the point
hash, the claim id the driver gave this point, and the driver as owner, ``medlora.host/pid``), then
looks at the point's other children:

- one FINISHED: the point is done elsewhere; the claim is deleted and nothing is trained;
- RUNNING with the same claim id: an earlier attempt of this very task whose worker died: KILLED;
- RUNNING, owned by a driver that no longer exists: KILLED (as :func:`medlora.experiment.resume.reconcile_children`);
- RUNNING, owned by another live driver, claimed earlier (start time, then run id): that driver
  has the point; the claim is deleted.

After training, :func:`settle_point` looks again: a child that finished while this one trained
wins, and this one is marked KILLED with ``medlora.duplicate_of``. Summaries count one FINISHED
child per point in any case (:func:`.compare.children_frame`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..experiment.resume import alive_elsewhere
from ..tracking import tags as T
from ..tracking.runs import search_all

log = logging.getLogger(__name__)


def point_children(client: Any, parent: Any, point_hash: str) -> list[Any]:
    """The live (not deleted) child runs of ``parent`` for one point."""
    return search_all(client, parent.info.experiment_id,
                      f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{T.POINT_HASH}` = '{point_hash}'")


def _order(run: Any) -> tuple[int, str]:
    return run.info.start_time or 0, run.info.run_id


def claim_point(client: Any, parent: Any, point_hash: str, claim: str, run_name: str,
                tags: Mapping[str, str]) -> str | None:
    """Create the point's child run and keep it if no other child has the point; its run id, else ``None``."""
    run = client.create_run(parent.info.experiment_id, run_name=run_name, tags={
        **tags, "mlflow.parentRunId": parent.info.run_id, T.ROLE: "child", T.POINT_HASH: point_hash, T.CLAIM: claim})
    mine = run.info.run_id
    for other in point_children(client, parent, point_hash):
        if other.info.run_id == mine:
            continue
        status, same_task = other.info.status, other.data.tags.get(T.CLAIM) == claim
        if status == "RUNNING" and (same_task or not alive_elsewhere(other)):
            why = "an earlier attempt of this task, whose worker died" if same_task else "left by a dead driver"
            log.warning("child run %s (%s) is %s: marking it KILLED", other.info.run_id, run_name, why)
            client.set_terminated(other.info.run_id, status="KILLED")
        elif status == "FINISHED" or (status == "RUNNING" and _order(other) < _order(run)):
            log.info("point %s is %s by run %s: not trained again", run_name,
                     "finished" if status == "FINISHED" else "being trained", other.info.run_id)
            client.delete_run(mine)
            return None
    return mine


def settle_point(client: Any, parent: Any, point_hash: str, run_id: str) -> bool:
    """Whether the finished child ``run_id`` is the point's only FINISHED child; if another finished
    first, ``run_id`` is marked KILLED with ``medlora.duplicate_of`` and ``False`` returned."""
    done = [r for r in point_children(client, parent, point_hash) if r.info.status == "FINISHED"]
    earlier = [r for r in done if r.info.run_id != run_id and (r.info.end_time or 0, r.info.run_id) <
               (client.get_run(run_id).info.end_time or 0, run_id)]
    if not earlier:
        return True
    first = min(earlier, key=lambda r: (r.info.end_time or 0, r.info.run_id))
    log.warning("child run %s finished after run %s of the same point: marked KILLED", run_id, first.info.run_id)
    client.set_tag(run_id, T.DUPLICATE_OF, first.info.run_id)
    client.set_terminated(run_id, status="KILLED")
    return False
