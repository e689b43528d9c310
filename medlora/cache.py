"""medlora's per-user cache folder: things that are the same for every run on a machine (an empty
migrated MLflow store, the measured speed of bf16 on this CPU), built once and reused."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``MEDLORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/medlora``, else ``~/.cache/medlora``."""
    if os.environ.get("MEDLORA_CACHE_DIR"):
        return Path(os.environ["MEDLORA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medlora"
