"""The attention pooling of a study-level run, saved beside the method's artifact and pinned in ``medlora.json``.

A run with ``preprocess.view.aggregate: attention`` exports its slice encoder as every run of its method
does (:mod:`.layout`: a LoRA adapter, a probe's head, a full model) and its pooling
(:class:`~medlora.models.aggregator.GatedAttentionPool`) as ``aggregator/aggregator.safetensors``.
``medlora.json`` → ``aggregator`` names the file, its sha256 and the arguments that rebuild the module::

    from medlora.models.aggregator import GatedAttentionPool, StudyModel
    pool = GatedAttentionPool(**meta["aggregator"]["spec"])
    pool.load_state_dict(load_file("runs/x/aggregator/aggregator.safetensors"))
    study_model = StudyModel(model, pool).eval()   # model: the timm (+ peft) model, loaded as usual
    logits, attention = study_model.attend(slices[None])  # slices: (n, C, H, W) of one study

Without the aggregator a study-level bundle cannot score anything: loading refuses it by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import BundleError
from ..models.aggregator import GatedAttentionPool, StudyModel
from ..models.backbone import sha256_file
from .bundle import Bundle

FOLDER = "aggregator"
FILE = "aggregator.safetensors"
DESCRIPTION = ("gated-attention pooling (Ilse et al. 2018) over the pooled features of a study's slices, with the "
               "study's classifier; the timm model encodes each slice, this module gives the study's outputs")


def save_aggregator(out: Path, pool: GatedAttentionPool) -> dict[str, Any]:
    """Write ``out/aggregator/aggregator.safetensors``; returns its ``medlora.json`` entry."""
    from safetensors.torch import save_file

    dst = Path(out) / FOLDER
    dst.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in pool.state_dict().items()}
    save_file(state, dst / FILE, metadata={"format": "pt", "module": "GatedAttentionPool"})
    return {"kind": "gated_attention", "path": f"{FOLDER}/{FILE}", "sha256": sha256_file(dst / FILE),
            "spec": pool.spec(), "description": DESCRIPTION}


def _checked(local: Path, meta: dict[str, Any], what: str) -> Path:
    entry = meta.get("aggregator")
    if not entry:
        raise BundleError(f"{what} was trained with preprocess.view.aggregate: attention but {what} has no "
                          "'aggregator' entry in medlora.json; export the run again")
    path = Path(local) / entry["path"]
    if not path.is_file():
        raise BundleError(f"{what} has no {entry['path']}: a study-level run exports its attention pooling there")
    if sha256_file(path) != entry["sha256"]:
        raise BundleError(f"{what}: {entry['path']} does not match its sha256 in medlora.json")
    return path


def copy_aggregator(local: Path, dst: Path, meta: dict[str, Any], what: str) -> None:
    """Copy the (checked) aggregator of a study-level run into a bundle; nothing for other runs."""
    if not is_study_level(meta):
        return
    src = _checked(local, meta, what)
    (Path(dst) / FOLDER).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, Path(dst) / meta["aggregator"]["path"])


def is_study_level(meta: dict[str, Any]) -> bool:
    """Whether ``medlora.json``'s run scores studies with an attention pooling."""
    return (meta.get("operating_point") or {}).get("aggregate") == "attention"


def load_pool(bundle: Bundle) -> GatedAttentionPool:
    """The bundle's attention pooling, checked against its sha256."""
    from safetensors.torch import load_file

    path = _checked(bundle.path, bundle.meta, f"bundle {bundle.path}")
    pool = GatedAttentionPool(**bundle.meta["aggregator"]["spec"])
    pool.load_state_dict(load_file(path))
    return pool.eval()


def study_model(encoder: nn.Module, bundle: Bundle) -> StudyModel:
    """``encoder`` (the bundle's loaded timm / peft model) with the bundle's pooling."""
    return StudyModel(encoder, load_pool(bundle)).eval()
