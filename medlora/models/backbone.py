"""Build the timm base model and identify its weights by content (sha256) and by origin.

Four weight sources, one record (:class:`BaseInfo`):

* ``model.pretrained: true`` — timm's hub loading (timm names and ``hf-hub:`` names), from the hub or,
  offline, from a copied Hugging Face cache (:mod:`.hub`); the repo, snapshot revision, file and its
  sha256 are recorded, and a rebuild loads that revision again.
* ``model.weights: FILE`` — a local ``.safetensors`` (or ``.pth``/``.bin`` read with
  ``torch.load(weights_only=True)``) for air-gapped sites; its sha256 is recorded. A file with a
  ``base_card.md`` beside it (a base that ``medlora pretrain`` wrote) is recorded as such.
* ``model.weights: FOLDER`` — timm / Hugging Face ``save_pretrained`` layout (``config.json`` +
  ``model.safetensors``): the architecture, its ``model_args`` and its preprocessing come from
  ``config.json`` (:mod:`.weights`).
* neither — timm's random initialisation, saved once as safetensors and referenced by path +
  sha256, so an adapter can always be put back on the exact base it was trained on.

``volume`` (a :class:`~.volume.VolumeInput`) builds the same architecture for whole volumes: timm's ViT
with a 3D patch embedding, a 2D base's weights inflated into it (:mod:`.volume`); the geometry is
recorded with the base, so a rebuild inflates the same file the same way.

``state_sha256`` hashes the base's own tensors (classifier head excluded) in a canonical
safetensors serialisation, whatever the source: it is what a loader checks before putting an
adapter on a base. Tensors that do not fit are reported key by key with the likely ``model.kwargs``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, WeightsError
from ..hashing import sha256_file
from .volume import VolumeInput, VolumePatchEmbed, inflate_state
from .weights import fit_state, load_weights_file, read_folder

__all__ = ["LOCAL_SOURCES", "BaseInfo", "architecture", "base_state", "create_base", "head_name", "head_names", "head_prefixes",
           "load_weights_file", "rebuild_base", "state_sha256"]

log = logging.getLogger(__name__)
LOCAL_SOURCES = ("file", "folder", "pretrain")  # bases read from a local weights file named in medlora.json


@dataclass
class BaseInfo:
    timm_name: str
    timm_kwargs: dict[str, Any]
    source: str  # "hub" | "file" | "folder" | "pretrain" | "init"
    weights_path: str | None
    sha256: str  # of the weights file (file/folder/init/hub cache file) or of the canonical state
    state_sha256: str
    num_classes: int
    # where the weights came from: hub repo + revision + file, folder, file, or pretraining run
    origin: dict[str, Any] = field(default_factory=dict)
    volume: dict[str, Any] | None = None  # VolumeInput of a volume ViT (depth, tubelet, stem if not patch); None for 2D

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_names(model: nn.Module) -> tuple[str, ...]:
    """The classifier head modules, from timm's pretrained config (``head`` for ViTs, ``head.fc`` for Swin
    and ConvNeXt, ``fc`` for ResNet, ``head`` and ``head_dist`` for distilled DeiT)."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    names = (name,) if isinstance(name, str) else tuple(name)
    return tuple(n for n in names if _has_module(model, n)) or names[:1]


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def head_name(model: nn.Module) -> str:
    """The (first) classifier head's module name."""
    return head_names(model)[0]


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the classifier head(s) (re-initialised per task)."""
    return tuple(n + "." for n in head_names(model))


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors without the classifier head, contiguous, on CPU."""
    heads = head_prefixes(model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith(heads)}


def state_sha256(model: nn.Module) -> str:
    """sha256 of the canonical safetensors bytes of :func:`base_state`."""
    from safetensors.torch import save

    return hashlib.sha256(save(base_state(model))).hexdigest()


def _timm(name: str, num_classes: int, kwargs: dict[str, Any], volume: VolumeInput | None = None,
          **extra: Any) -> nn.Module:
    import timm

    if volume is not None:
        extra["embed_layer"] = volume.embed_layer()
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **extra, **kwargs)
    except (TypeError, ValueError) as err:
        if volume is not None and "embed_layer" in str(err):  # an architecture without timm's embed_layer
            raise ConfigError(f"preprocess.view.kind: volume builds timm's VisionTransformer with a 3D patch "
                              f"embedding (ViT, DeiT, DINOv2 names); timm {name!r} cannot take it ({err}). Use a ViT "
                              "backbone, or a 2D view (every_k, slab, 2.5d) for this one") from None
        raise WeightsError(f"timm cannot create {name!r} with model.kwargs {kwargs}: {err}") from None
    except ConfigError as err:  # the 3D patch embedding refused this architecture's input settings
        raise ConfigError(f"preprocess.view.kind: volume needs timm's VisionTransformer (ViT, DeiT, DINOv2 names) with "
                          f"a fixed input size; timm {name!r} cannot take it: {err}") from None
    except (RuntimeError, AssertionError) as err:
        raise WeightsError(f"timm cannot create {name!r} with model.kwargs {kwargs}: {err}") from None
    if volume is not None and not isinstance(getattr(model, "patch_embed", None), VolumePatchEmbed):
        raise ConfigError(f"preprocess.view.kind: volume needs timm's VisionTransformer (ViT, DeiT, DINOv2 names); "
                          f"timm {name!r} is a {type(model).__name__}")
    return model


def _file_origin(path: Path) -> dict[str, Any]:
    """A weights file's origin: a medlora pretraining output (``base_card.md`` beside it, safetensors
    metadata) or a plain file."""
    card = path.parent / "base_card.md"
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
    if card.is_file():
        return {"kind": "pretrain", "path": str(path.resolve()), "base_card": str(card.resolve()),
                "base_card_sha256": sha256_file(card), "metadata": meta}
    return {"kind": "file", "path": str(path.resolve()), **({"metadata": meta} if meta else {})}


def _fit(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """:func:`fit_state`, a 2D state inflated first where ``model`` takes volumes."""
    fit_state(model, inflate_state(state, model), source, head_prefixes(model))


def _as_volume(model2d: nn.Module, name: str, num_classes: int, kwargs: dict[str, Any], volume: VolumeInput,
               source: str) -> nn.Module:
    """The volume ViT of ``name`` carrying ``model2d``'s weights, inflated."""
    model = _timm(name, num_classes, kwargs, volume, pretrained_cfg=getattr(model2d, "pretrained_cfg", None))
    _fit(model, model2d.state_dict(), Path(source))
    return model


def _from_folder(cfg: ModelConfig, num_classes: int, folder: Path,
                 volume: VolumeInput | None) -> tuple[nn.Module, BaseInfo]:
    found = read_folder(folder)
    if cfg.backbone.split(".")[0] != found.architecture.split(".")[0]:
        raise WeightsError(f"model.weights folder {folder} holds a {found.architecture!r} (its config.json) but "
                           f"model.backbone={cfg.backbone!r}; drop model.backbone to take the folder's architecture")
    kwargs = {**{k: v for k, v in found.model_args.items() if k != "num_classes"}, **cfg.kwargs}  # the task's head
    model = _timm(found.architecture, num_classes, kwargs, volume, pretrained_cfg=found.pretrained_cfg)
    _fit(model, load_weights_file(found.weights), found.weights)
    origin = {"kind": "folder", "path": str(folder.resolve()), "config_sha256": sha256_file(folder / "config.json"),
              "file": found.weights.name}
    info = BaseInfo(found.architecture, kwargs, "folder", str(found.weights.resolve()), sha256_file(found.weights),
                    state_sha256(model), num_classes, origin, _volume(volume))
    log.info("base %s from folder %s sha256=%s", found.architecture, folder, info.sha256[:12])
    return model, info


def _volume(volume: VolumeInput | None) -> dict[str, int] | None:
    return volume.to_dict() if volume is not None else None


def create_base(cfg: ModelConfig, num_classes: int, init_dir: Path | None = None, seed: int = 0,
                save_init: bool = True, volume: VolumeInput | None = None) -> tuple[nn.Module, BaseInfo]:
    """Create the timm model with a ``num_classes`` head from the configured weight source.

    ``init_dir`` is where a randomly initialised base is saved (required when neither ``pretrained``
    nor ``weights`` is set, unless ``save_init=False``: a check that builds the base and keeps nothing).
    ``volume``: build it for whole volumes (:mod:`.volume`), a 2D source's weights inflated.
    """
    kwargs = dict(cfg.kwargs)
    if cfg.pretrained:
        from .hub import hub_origin, load_pretrained

        model = load_pretrained(cfg.backbone, num_classes, kwargs, cfg.cache_dir)
        origin = hub_origin(model, cfg.backbone, cfg.cache_dir)
        if volume is not None:
            model = _as_volume(model, cfg.backbone, num_classes, kwargs, volume, f"hub {cfg.backbone}")
        state = state_sha256(model)
        info = BaseInfo(cfg.backbone, kwargs, "hub", None, origin.get("file_sha256") or state, state, num_classes, origin,
                        _volume(volume))
        log.info("base %s from hub repo %s revision %s", cfg.backbone, origin.get("repo"), origin.get("revision"))
        return model, info
    if cfg.weights is not None and Path(cfg.weights).is_dir():
        return _from_folder(cfg, num_classes, Path(cfg.weights), volume)
    torch.manual_seed(seed)
    model = _timm(cfg.backbone, num_classes, kwargs, volume)
    if cfg.weights is not None:
        path = Path(cfg.weights)
        _fit(model, load_weights_file(path), path)
        origin = _file_origin(path)
        info = BaseInfo(cfg.backbone, kwargs, origin["kind"], str(path.resolve()), sha256_file(path),
                        state_sha256(model), num_classes, origin, _volume(volume))
        log.info("base weights %s sha256=%s%s", path, info.sha256[:12], " (inflated to 3D)" if volume else "")
        return model, info
    if not save_init:
        return model, BaseInfo(cfg.backbone, kwargs, "init", None, "", state_sha256(model), num_classes,
                                 {"kind": "init"}, _volume(volume))
    if init_dir is None:
        raise WeightsError("a randomly initialised base needs a folder to be saved in")
    from safetensors.torch import save_file

    init_dir.mkdir(parents=True, exist_ok=True)
    path = init_dir / "base.safetensors"
    save_file(base_state(model), path)
    info = BaseInfo(cfg.backbone, kwargs, "init", str(path.resolve()), sha256_file(path), state_sha256(model),
                    num_classes, {"kind": "init", "seed": seed}, _volume(volume))
    log.info("randomly initialised base saved to %s (sha256=%s)", path, info.sha256[:12])
    return model, info


def architecture(info: dict[str, Any]) -> nn.Module:
    """The untrained timm architecture a :class:`BaseInfo` dict describes (a volume ViT where it has
    ``volume``): what a full fine-tune's own weights are loaded into."""
    return _timm(info["timm_name"], info["num_classes"], info.get("timm_kwargs") or {}, VolumeInput.of(info))


def rebuild_base(info: dict[str, Any]) -> nn.Module:
    """Rebuild a base from a :class:`BaseInfo` dict (``medlora.json``) and verify its content."""
    volume = VolumeInput.of(info)
    if info["source"] == "hub":
        from .hub import load_pretrained

        origin = info.get("origin") or {}
        cache = origin.get("cache_dir")
        model = load_pretrained(info["timm_name"], info["num_classes"], info["timm_kwargs"],
                                cache if cache and Path(cache).is_dir() else None, origin.get("revision"))
        if volume is not None:
            model = _as_volume(model, info["timm_name"], info["num_classes"], info["timm_kwargs"], volume,
                               f"hub {info['timm_name']}")
    else:
        path = Path(info["weights_path"])
        model = _timm(info["timm_name"], info["num_classes"], info["timm_kwargs"], volume)
        if sha256_file(path) != info["sha256"]:
            raise WeightsError(f"base weights {path} have sha256 {sha256_file(path)[:12]}…, expected {info['sha256'][:12]}…")
        _fit(model, load_weights_file(path), path)
    actual = state_sha256(model)
    if actual != info["state_sha256"]:
        raise WeightsError(f"the rebuilt base {info['timm_name']} differs from the one the adapter was trained on "
                           f"(state sha256 {actual[:12]}… != {info['state_sha256'][:12]}…)")
    return model
