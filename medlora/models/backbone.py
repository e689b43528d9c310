"""Build the timm base model and identify its weights by content (sha256).

Three weight sources, one record (:class:`BaseInfo`):

* ``model.pretrained: true`` — timm's hub loading (``timm.create_model(..., pretrained=True)``,
  ``hf-hub:`` names included). Offline, this fails with an error naming the alternatives.
* ``model.weights: PATH`` — a local ``.safetensors`` (or ``.pth``/``.bin`` read with
  ``torch.load(weights_only=True)``) for air-gapped sites; its sha256 is recorded.
* neither — timm's random initialisation, saved once as safetensors and referenced by path +
  sha256, so an adapter can always be put back on the exact base it was trained on.

``state_sha256`` hashes the base's own tensors (classifier head excluded) in a canonical
safetensors serialisation, whatever the source: it is what a loader checks before putting an
adapter on a base.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import WeightsError

log = logging.getLogger(__name__)


@dataclass
class BaseInfo:
    timm_name: str
    timm_kwargs: dict[str, Any]
    source: str  # "hub" | "file" | "init"
    weights_path: str | None
    sha256: str  # of the weights file (file/init) or of the canonical state (hub)
    state_sha256: str
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def head_name(model: nn.Module) -> str:
    """The classifier head's module name, from timm's pretrained config (``head`` for ViTs)."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    return name if isinstance(name, str) else name[0]


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the classifier head (re-initialised per task)."""
    return (head_name(model) + ".",)


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors without the classifier head, contiguous, on CPU."""
    heads = head_prefixes(model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith(heads)}


def state_sha256(model: nn.Module) -> str:
    """sha256 of the canonical safetensors bytes of :func:`base_state`."""
    from safetensors.torch import save

    return hashlib.sha256(save(base_state(model))).hexdigest()


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a local weights file safely (safetensors, or torch.load with weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure means the same thing to the user
        raise WeightsError(f"model.weights file {path} cannot be read as weights: {err}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"model.weights file {path} does not hold a flat tensor state dict")
    return state


def _apply_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    heads = head_prefixes(model)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(heads) and (k not in own or own[k].shape != v.shape))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(heads)]
    if missing or unexpected:
        raise WeightsError(
            f"model.weights file {source} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def create_base(cfg: ModelConfig, num_classes: int, init_dir: Path | None = None, seed: int = 0) -> tuple[nn.Module, BaseInfo]:
    """Create the timm model with a ``num_classes`` head from the configured weight source.

    ``init_dir`` is where a randomly initialised base is saved (required when neither
    ``pretrained`` nor ``weights`` is set).
    """
    import timm

    kwargs = dict(cfg.kwargs)
    if cfg.pretrained:
        try:
            model = timm.create_model(cfg.backbone, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as err:  # noqa: BLE001 - hub/network errors come in many types
            raise WeightsError(
                f"could not load pretrained weights for {cfg.backbone!r} from the hub ({type(err).__name__}: {err}). "
                "Offline or air-gapped? Set model.weights: PATH to a local .safetensors/.pth file, "
                "or model.pretrained: false to train on a randomly initialised base."
            ) from None
        info = BaseInfo(cfg.backbone, kwargs, "hub", None, "", "", num_classes)
        info.state_sha256 = state_sha256(model)
        info.sha256 = info.state_sha256
        return model, info
    try:
        torch.manual_seed(seed)
        model = timm.create_model(cfg.backbone, pretrained=False, num_classes=num_classes, **kwargs)
    except (RuntimeError, TypeError, ValueError) as err:
        raise WeightsError(f"timm cannot create {cfg.backbone!r} with kwargs {kwargs}: {err}") from None
    if cfg.weights is not None:
        path = Path(cfg.weights)
        _apply_state(model, load_weights_file(path), path)
        info = BaseInfo(cfg.backbone, kwargs, "file", str(path.resolve()), sha256_file(path), state_sha256(model), num_classes)
        log.info("base weights %s sha256=%s", path, info.sha256[:12])
        return model, info
    if init_dir is None:
        raise WeightsError("a randomly initialised base needs a folder to be saved in")
    from safetensors.torch import save_file

    init_dir.mkdir(parents=True, exist_ok=True)
    path = init_dir / "base.safetensors"
    save_file(base_state(model), path)
    info = BaseInfo(cfg.backbone, kwargs, "init", str(path.resolve()), sha256_file(path), state_sha256(model), num_classes)
    log.info("randomly initialised base saved to %s (sha256=%s)", path, info.sha256[:12])
    return model, info


def rebuild_base(info: dict[str, Any]) -> nn.Module:
    """Rebuild a base from a :class:`BaseInfo` dict (``medlora.json``) and verify its content."""
    import timm

    if info["source"] == "hub":
        model = timm.create_model(info["timm_name"], pretrained=True, num_classes=info["num_classes"], **info["timm_kwargs"])
    else:
        path = Path(info["weights_path"])
        model = timm.create_model(info["timm_name"], pretrained=False, num_classes=info["num_classes"], **info["timm_kwargs"])
        if sha256_file(path) != info["sha256"]:
            raise WeightsError(f"base weights {path} have sha256 {sha256_file(path)[:12]}…, expected {info['sha256'][:12]}…")
        _apply_state(model, load_weights_file(path), path)
    actual = state_sha256(model)
    if actual != info["state_sha256"]:
        raise WeightsError(f"the rebuilt base {info['timm_name']} differs from the one the adapter was trained on "
                           f"(state sha256 {actual[:12]}… != {info['state_sha256'][:12]}…)")
    return model
