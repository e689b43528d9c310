"""Write an adapter in peft's ``save_pretrained`` layout plus ``medlora.json``.

``medlora.json`` holds what a plain timm + peft user needs to rebuild the model and
preprocess an input: the base (timm name, kwargs, weights source, sha256 of the file and of the
state), the adaptation method, preprocessing, label names and which is abnormal, the frozen
operating point and the MLflow run id. peft leaves ``base_model_name_or_path`` empty for timm
models, so this file, not the adapter config, is the authority on the base.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .. import __version__

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
METADATA_FILE = "medlora.json"


def library_versions() -> dict[str, str]:
    import peft
    import timm
    import torch

    return {"medlora": __version__, "torch": torch.__version__, "timm": timm.__version__, "peft": peft.__version__}


def git_commit() -> str | None:
    """The commit of the medlora checkout, when run from one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_trainable(model: nn.Module, method: str, folder: Path) -> None:
    """LoRA → peft ``save_pretrained``; other methods → their trainable weights as safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    if method == "lora":
        model.save_pretrained(str(folder), safe_serialization=True)
        return
    from safetensors.torch import save_file

    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, folder / "model.safetensors", metadata={"method": method})


def write_export(out: Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``out/adapter/`` and ``out/medlora.json``, staged in a temporary folder first.

    Other files in ``out`` (the run's base weights, predictions) are left alone; a failure while
    saving leaves any previous export in place.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out))
    try:
        save_trainable(model, metadata["method"], tmp / "adapter")
        meta = {"format_version": FORMAT_VERSION, "versions": library_versions(), "git_commit": git_commit(), **metadata}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if (out / "adapter").exists():
            shutil.rmtree(out / "adapter")
        os.replace(tmp / "adapter", out / "adapter")
        os.replace(tmp / METADATA_FILE, out / METADATA_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s adapter to %s", metadata["method"], out)
    return out


def read_metadata(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / METADATA_FILE).read_text())
