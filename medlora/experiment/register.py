"""``medlora register``: a finished run as an MLflow pyfunc model, alias ``candidate``.

The run is exported to a review bundle first (:func:`medlora.review.build.export_bundle`, in a
temporary folder unless an exported bundle is given), then logged and registered by
:func:`medlora.bundle.pyfunc.register_bundle`. A run whose keys were not made with a site secret is
refused before anything is written (:mod:`medlora.review.keys`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..bundle.pyfunc import register_bundle
from ..review.build import export_bundle
from ..review.keys import require_site_keys


def register_run(run_id: str, name: str, tracking_uri: str | None = None, bundle_dir: Path | None = None,
                 **export_kwargs: Any) -> tuple[str, str]:
    """Register run ``run_id`` (exported to a temporary bundle unless ``bundle_dir`` is given).

    Refused, before anything is written, when the run's keys were not made with a site secret.
    """
    require_site_keys(run_id, tracking_uri)
    if bundle_dir is not None:
        return register_bundle(bundle_dir, name, run_id, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="medlora-register-") as tmp:
        bundle = export_bundle(run_id, Path(tmp) / "bundle", tracking_uri=tracking_uri, **export_kwargs)
        return register_bundle(bundle, name, run_id, tracking_uri)
