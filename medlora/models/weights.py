"""Local base weights: a file or a ``save_pretrained`` folder, read safely and fitted with errors a person
can act on.

Accepted (:data:`ACCEPTED`): a ``.safetensors`` file; a ``.pth``/``.pt``/``.bin``/``.ckpt`` state dict
written by ``torch.save`` (read with ``weights_only=True``, unwrapped from ``state_dict``/``model``
entries); or a folder in timm / Hugging Face ``save_pretrained`` layout (``config.json`` naming the
timm ``architecture`` and its ``model_args``, plus ``model.safetensors`` or ``pytorch_model.bin``),
as written by ``timm.models.save_for_hf``.

When tensors do not fit the model, :func:`fit_state` names the first keys with the file's shape next
to the model's and reads the likely ``model.kwargs`` (``embed_dim``, ``depth``, ``patch_size``,
``img_size``) off the file's own tensors.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError

log = logging.getLogger(__name__)

ACCEPTED = (".safetensors, a torch.save state dict (.pth/.pt/.bin/.ckpt), or a folder in timm/Hugging Face "
            "save_pretrained layout (config.json + model.safetensors)")
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
SHOWN = 5  # mismatching keys named in an error


@dataclass
class WeightsFolder:
    """A ``save_pretrained`` folder: its timm architecture, construction args and preprocessing."""

    path: Path
    architecture: str
    model_args: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    weights: Path
    config_json: dict[str, Any] = field(repr=False, default_factory=dict)


def _text_like(path: Path) -> bool:
    head = path.read_bytes()[:512]
    return bool(head) and all(b in b"\t\n\r" or 32 <= b < 127 for b in head)


def _unreadable(path: Path, why: str) -> WeightsError:
    kind = "a text file" if _text_like(path) else "not a weights file"
    return WeightsError(f"model.weights file {path} cannot be read as weights: it looks like {kind} ({why}). "
                        f"Accepted: {ACCEPTED}")


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a local weights file safely (safetensors, or torch.load with ``weights_only``)."""
    path = Path(path)
    if path.is_dir():
        return load_weights_file(read_folder(path).weights)
    if not path.is_file():
        raise WeightsError(f"model.weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure means the same thing to the user
        raise _unreadable(path, f"{type(err).__name__}: {str(err)[:200]}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"model.weights file {path} does not hold a flat tensor state dict "
                           f"(got {type(state).__name__}). Accepted: {ACCEPTED}")
    return state



def read_folder(path: Path) -> WeightsFolder:
    """A ``save_pretrained`` folder's config and weights file; a :class:`WeightsError` saying what is missing."""
    path = Path(path)
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except FileNotFoundError:
        raise WeightsError(f"model.weights folder {path} has no config.json; accepted: {ACCEPTED}") from None
    except (OSError, ValueError) as err:
        raise WeightsError(f"model.weights folder {path}: config.json is not valid JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise WeightsError(f"model.weights folder {path}: config.json does not hold a JSON object")
    pretrained_cfg = dict(cfg.get("pretrained_cfg") or {k: v for k, v in cfg.items() if k != "architecture"})
    arch = cfg.get("architecture") or pretrained_cfg.get("architecture")
    if not arch:
        hint = (f" (it names transformers architectures {cfg['architectures']}: a Hugging Face transformers "
                "model, not a timm one)") if "architectures" in cfg else ""
        raise WeightsError(f"model.weights folder {path}: config.json names no timm 'architecture'{hint}; "
                           "save the model with timm.models.save_for_hf or set model.backbone")
    weights = next((path / f for f in FOLDER_WEIGHTS if (path / f).is_file()), None)
    if weights is None:
        raise WeightsError(f"model.weights folder {path} has config.json but no weights file "
                           f"({', '.join(FOLDER_WEIGHTS)}); accepted: {ACCEPTED}")
    return WeightsFolder(path, str(arch), dict(cfg.get("model_args") or {}), _known_fields(pretrained_cfg), weights, cfg)


def _known_fields(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    """The entries of a folder's ``pretrained_cfg`` that this timm's ``PretrainedCfg`` knows (a folder saved
    by another timm version may carry others)."""
    import dataclasses

    from timm.models import PretrainedCfg

    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    dropped = sorted(set(pretrained_cfg) - known)
    if dropped:
        log.info("pretrained_cfg entries unknown to this timm ignored: %s", ", ".join(dropped))
    return {k: v for k, v in pretrained_cfg.items() if k in known}


def _block_depth(keys: list[str], pattern: str) -> int | None:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else None


def read_kwargs(state: dict[str, torch.Tensor], num_prefix_tokens: int = 1) -> dict[str, Any]:
    """The timm ViT kwargs a state dict was made with, as far as its tensors tell (embed_dim, depth,
    patch_size, img_size; Swin's depths per stage)."""
    out: dict[str, Any] = {}
    keys = list(state)
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 4:
        out["embed_dim"], out["patch_size"] = int(proj.shape[0]), int(proj.shape[-1])
    depth = _block_depth(keys, r"blocks\.(\d+)\.")
    if depth:
        out["depth"] = depth
    stages = _block_depth(keys, r"layers\.(\d+)\.")
    if stages:
        out["depths"] = tuple(_block_depth(keys, rf"layers\.{i}\.blocks\.(\d+)\.") or 0 for i in range(stages))
    pos = state.get("pos_embed")
    if pos is not None and pos.ndim == 3 and "patch_size" in out:
        for prefix in (num_prefix_tokens, 0, 1):  # class/register tokens may or may not carry position embeddings
            side = math.isqrt(pos.shape[1] - prefix) if pos.shape[1] > prefix else 0
            if side and side * side == pos.shape[1] - prefix:
                out["img_size"] = side * out["patch_size"]
                break
    return out


def suggest_kwargs(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """The ``model.kwargs`` under which ``model``'s architecture would take ``state``: what the file says
    and the model differs in."""
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    want, have = read_kwargs(state, prefix), read_kwargs(model.state_dict(), prefix)
    return {k: v for k, v in want.items() if have.get(k) != v}


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path, heads: tuple[str, ...]) -> None:
    """Load ``state`` into ``model`` (the classifier head may differ: it is re-initialised per task), or
    raise a :class:`WeightsError` naming mismatching keys with both shapes and the likely ``model.kwargs``."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(heads) and (k not in own or own[k].shape != v.shape))}
    # in the model's order: embeddings (which say most about the kwargs) before the blocks
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.startswith(heads)]
    unexpected = [k for k in state if k not in own]
    if not (shapes or missing or unexpected):
        model.load_state_dict(state, strict=False)
        return
    lines = [f"model.weights {source} does not fit timm {type(model).__name__} as configured:"]
    if shapes:
        lines.append(f"  {len(shapes)} tensors of another shape, e.g.")
        lines += [f"    {k}: file {f} vs model {m}" for k, f, m in shapes[:SHOWN]]
    if missing:
        lines.append(f"  {len(missing)} model tensors not in the file, e.g. {', '.join(missing[:SHOWN])}")
    if unexpected:
        lines.append(f"  {len(unexpected)} file tensors the model does not have, e.g. {', '.join(unexpected[:SHOWN])}")
    hint = suggest_kwargs(state, model)
    if hint:
        lines.append("  the file looks made with model.kwargs " + json.dumps(hint)
                     + " (num_heads cannot be read from weights: keep the architecture's, or set it too)")
    else:
        lines.append("  check model.backbone and model.kwargs against how the file was made")
    raise WeightsError("\n".join(lines))
