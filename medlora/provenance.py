"""Which code produced a result: the medlora version, the git commit, the key library versions.

Recorded in run tags, ``medlora.json`` and the review bundle, so a result can be traced to the
exact code that made it.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__


def library_versions() -> dict[str, str]:
    """Versions of medlora and of the libraries that define a model's numbers."""
    import peft
    import timm
    import torch

    return {"medlora": __version__, "torch": torch.__version__, "timm": timm.__version__, "peft": peft.__version__}


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the medlora checkout, when run from one (asked once per process)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
