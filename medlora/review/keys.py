"""Which runs may leave the site: only those whose patient/study keys were made under a site secret.

Runs made before pseudonyms became HMAC-SHA256 under a site secret used a fixed public salt, and
their keys can be reversed by brute force (short PatientIDs in seconds). Ingest tags every run with
its scheme (``medlora.key_scheme``: ``hmac-sha256`` or ``hmac-sha256:<key id>``); ``medlora export``
and ``medlora register`` refuse a run without that tag or with another value.
"""

from __future__ import annotations

import logging

from ..errors import BundleError
from ..io.deid import SCHEME
from ..tracking import tags as T

log = logging.getLogger(__name__)


def site_keyed(value: str | None) -> bool:
    """True for a ``medlora.key_scheme`` tag value that says: HMAC-SHA256 under a site secret."""
    return value is not None and (value == SCHEME or value.startswith(SCHEME + ":"))


def require_site_keys(run_id: str, tracking_uri: str | None = None) -> None:
    """Raise :class:`BundleError` unless MLflow run ``run_id`` is tagged with site-secret keys."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    except MlflowException as err:
        raise BundleError(f"MLflow run {run_id!r} cannot be read from {tracking_uri or 'the default store'}: "
                          f"{err.message}") from None
    value = tags.get(T.KEY_SCHEME)
    if site_keyed(value):
        return
    found = f"tag {T.KEY_SCHEME}={value!r}" if value is not None else f"no tag {T.KEY_SCHEME}"
    raise BundleError(f"refusing to export or register run {run_id}: it has {found}, so its patient and study keys "
                      f"were not made with a site secret ({SCHEME}) and could be reversed from the bundle. Train it "
                      "again with this medlora (keys are then HMACs under the site key file; the split is drawn anew)")
