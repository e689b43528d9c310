"""What a bundle holds: the files a run exports for each adaptation method, and ``medlora.json`` beside it.

One contract for every method (:data:`ARTIFACTS`), so that export, verify, predict, register and the
pyfunc model treat them alike:

* ``lora`` → ``adapter/``: peft's ``save_pretrained`` layout (``adapter_config.json``,
  ``adapter_model.safetensors``), classifier head included through ``modules_to_save``; it is put on
  the exact base named in ``medlora.json``.
* ``linear_probe`` → ``head/head.safetensors``: the classifier head's tensors only; the base is
  unchanged and named in ``medlora.json`` (it is needed to use the head).
* ``full`` → ``model/model.safetensors``: the whole fine-tuned model's state. A full fine-tune is a
  new model, not an adapter: it needs no base to run, and ``medlora.json`` keeps the base only as
  the record of where training started.

``medlora.json``'s ``weights`` entry names the artifact, its kind, its file's sha256, whether the base is
needed, and says in words what it is. peft leaves ``base_model_name_or_path`` empty for timm models,
so ``medlora.json``, not the adapter config, is the authority on the base.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import BundleError
from ..hashing import sha256_file
from ..models.backbone import head_prefixes
from ..provenance import git_commit, library_versions

__all__ = ["ARTIFACTS", "BUNDLE_BASE_FILE", "FORMAT_VERSION", "METADATA_FILE", "MethodArtifact", "artifact_of",
           "copy_weights", "git_commit", "library_versions", "require_weights", "save_trainable", "weights_entry",
           "write_export"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: a ``weights`` entry and one artifact layout per method
METADATA_FILE = "medlora.json"
BUNDLE_BASE_FILE = "base/base.safetensors"  # a randomly initialised base, copied into its bundle


@dataclass(frozen=True)
class MethodArtifact:
    """Where a method's trained weights live in a run folder / bundle, and what they are."""

    method: str
    kind: str  # adapter | head | model
    folder: str
    files: tuple[str, ...]
    weights_file: str  # the safetensors file among ``files``
    needs_base: bool
    description: str

    @property
    def weights_path(self) -> str:
        return f"{self.folder}/{self.weights_file}"


ARTIFACTS: dict[str, MethodArtifact] = {
    "lora": MethodArtifact("lora", "adapter", "adapter", ("adapter_config.json", "adapter_model.safetensors"),
                           "adapter_model.safetensors", True,
                           "LoRA adapter (peft save_pretrained layout, classifier head included); valid only on the "
                           "exact base named here"),
    "linear_probe": MethodArtifact("linear_probe", "head", "head", ("head.safetensors",), "head.safetensors", True,
                                   "linear probe: the classifier head only, on the unchanged base named here"),
    "full": MethodArtifact("full", "model", "model", ("model.safetensors",), "model.safetensors", False,
                           "full fine-tune: a new model, not an adapter; every weight was trained, the base named "
                           "here is only where training started and is not needed to use it"),
}


def artifact_of(method: str) -> MethodArtifact:
    """The export contract of ``method``; a :class:`BundleError` naming the known methods otherwise."""
    if method not in ARTIFACTS:
        raise BundleError(f"method {method!r} has no export format; known methods: {', '.join(ARTIFACTS)}")
    return ARTIFACTS[method]


def _state(model: nn.Module, method: str) -> dict[str, Any]:
    """The tensors a non-LoRA method exports: the head's (linear probe) or the whole state (full)."""
    state = model.state_dict()
    if method == "linear_probe":
        heads = head_prefixes(model)
        state = {k: v for k, v in state.items() if k.startswith(heads)}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_trainable(model: nn.Module, method: str, folder: Path) -> Path:
    """Save ``model``'s trained weights in ``method``'s layout under ``folder`` (the artifact's folder
    is created inside it); returns the weights file."""
    art = artifact_of(method)
    dst = Path(folder) / art.folder
    dst.mkdir(parents=True, exist_ok=True)
    if method == "lora":
        model.save_pretrained(str(dst), safe_serialization=True)
    else:
        from safetensors.torch import save_file

        state = _state(model, method)
        if not state:
            raise BundleError(f"the {method} model has no tensors to export under {head_prefixes(model)}")
        save_file(state, dst / art.weights_file, metadata={"format": "pt", "method": method})
    return dst / art.weights_file


def weights_entry(method: str, weights_file: Path) -> dict[str, Any]:
    """The ``weights`` entry of ``medlora.json`` for a saved artifact."""
    art = artifact_of(method)
    return {"kind": art.kind, "path": art.weights_path, "files": [f"{art.folder}/{f}" for f in art.files],
            "sha256": sha256_file(weights_file), "needs_base": art.needs_base, "description": art.description}


def require_weights(local: Path, meta: dict[str, Any], what: str) -> MethodArtifact:
    """Check that the artifact ``meta`` describes is complete under ``local`` (a run's downloaded
    artifacts or a bundle) and matches its sha256; ``what`` names the folder in errors."""
    method = meta.get("method")
    art = artifact_of(str(method))
    entry = meta.get("weights")
    if entry is None and method != "lora":
        raise BundleError(f"{what} ({method}) was written by a medlora older than export format {FORMAT_VERSION}, "
                          "which saved only adapter/model.safetensors for this method; run it again to export it")
    for rel in art.files:
        if not (Path(local) / art.folder / rel).is_file():
            raise BundleError(f"{what} has no {art.folder}/{rel}: a {method} run exports {', '.join(art.files)} "
                              f"under {art.folder}/ ({art.description})")
    if entry is not None and sha256_file(Path(local) / art.weights_path) != entry["sha256"]:
        raise BundleError(f"{what}: {art.weights_path} does not match the sha256 in {METADATA_FILE}")
    return art


def copy_weights(local: Path, dst: Path, meta: dict[str, Any], what: str) -> None:
    """Copy the (checked) artifact of ``meta``'s method from ``local`` into ``dst``."""
    art = require_weights(local, meta, what)
    (Path(dst) / art.folder).mkdir(parents=True, exist_ok=True)
    for rel in art.files:
        shutil.copyfile(Path(local) / art.folder / rel, Path(dst) / art.folder / rel)


def write_export(out: Path, model: nn.Module, metadata: dict[str, Any]) -> Path:
    """Write the method's artifact folder and ``out/medlora.json``, staged in a temporary folder first.

    Other files in ``out`` (the run's base weights, predictions) are left alone; a failure while
    saving leaves any previous export in place.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    method = metadata["method"]
    art = artifact_of(method)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out))
    try:
        weights = save_trainable(model, method, tmp)
        meta = {"format_version": FORMAT_VERSION, "versions": library_versions(), "git_commit": git_commit(),
                **metadata, "weights": weights_entry(method, weights)}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
        for other in ARTIFACTS.values():  # a folder of another method's earlier export would mislead
            if (out / other.folder).exists():
                shutil.rmtree(out / other.folder)
        os.replace(tmp / art.folder, out / art.folder)
        os.replace(tmp / METADATA_FILE, out / METADATA_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the %s %s to %s", method, art.kind, out / art.folder)
    return out
