"""Pretrained bases from the Hugging Face hub, or offline from a copied Hugging Face cache.

``model.pretrained: true`` goes through timm's own hub loading (``timm.create_model(...,
pretrained=True)``: timm names resolve to their ``timm/…`` repo, ``hf-hub:org/name`` names to that
repo's ``config.json``), with three additions:

* **Offline, fast.** ``HF_HUB_OFFLINE=1`` is honoured; when it is not set, one TCP connection to the
  hub endpoint with a :data:`PROBE_TIMEOUT_S` timeout decides whether the hub can be reached, and if
  not, the load runs in offline mode (the cache only) instead of spending a minute in retries. A model
  missing from the cache is an error in well under 5 seconds, naming the repo, the cache folder and
  what to copy where.
* **The cache.** ``model.cache_dir`` (else ``HF_HUB_CACHE``, else ``HF_HOME/hub``) is where the hub
  layout ``models--org--name/snapshots/<commit>/…`` with ``refs/main`` is looked up.
* **Pinned.** :func:`hub_origin` records the repo, the snapshot commit actually loaded, the file and
  its sha256, so :func:`load_pretrained` can later rebuild that exact revision.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from ..errors import WeightsError
from ..hashing import sha256_file

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 2.0
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_PREFIX = "hf-hub:"


def split_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:org/name@revision`` → (``org/name``, ``revision`` or None)."""
    repo, _, revision = name.removeprefix(HUB_PREFIX).partition("@")
    return repo, revision or None


def hub_repo(name: str) -> str | None:
    """The hub repo a timm or ``hf-hub:`` name loads its weights from (None: not hosted on the hub)."""
    if name.startswith(HUB_PREFIX):
        return split_hub_name(name)[0]
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return hub_id.split("@")[0] if hub_id else None


def cache_root(cache_dir: Path | str | None) -> Path:
    """The Hugging Face hub cache in use: ``model.cache_dir``, else huggingface_hub's (HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable() -> Iterator[str | None]:
    """Run the block in huggingface_hub's offline mode when ``HF_HUB_OFFLINE`` is set or the hub cannot
    be reached; yields why it is offline (None when online)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        yield "HF_HUB_OFFLINE=1"
        return
    if hub_reachable():
        yield None
        return
    why = f"{constants.ENDPOINT} cannot be reached"
    log.warning("%s: loading pretrained weights from the local Hugging Face cache only", why)
    constants.HF_HUB_OFFLINE = True
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = False


def _cache_hint(repo: str | None, cache: Path) -> str:
    if repo is None:
        return ""
    folder = "models--" + repo.replace("/", "--")
    if not (cache / folder).is_dir():
        found = f"{cache} has no {folder}"
    elif not (cache / folder / "refs" / "main").is_file() and not any((cache / folder / "snapshots").glob("*")):
        found = f"{cache / folder} has no snapshot (refs/main, snapshots/<commit>/)"
    else:
        found = f"{cache / folder} lacks the weights file ({' or '.join(HUB_FILES[:2])}) for the requested revision"
    return (f" The Hugging Face cache {found}: on a machine with hub access run `hf download {repo}` and copy "
            f"{folder} into {cache} (or point model.cache_dir / HF_HOME at the copied cache).")


def _failure(name: str, err: Exception, offline: str | None, repo: str | None, cache: Path) -> WeightsError:
    first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    where = f"hub repo {repo}" if repo else "the hub"
    offline_note = f" The hub is offline ({offline})." if offline else ""
    return WeightsError(
        f"could not load pretrained weights for model.backbone={name!r} from {where} ({type(err).__name__}: {first})."
        f"{offline_note}{_cache_hint(repo, cache) if offline else ''} "
        "Offline or air-gapped? Set model.weights: PATH to a local .safetensors/.pth file or a save_pretrained "
        "folder, or model.pretrained: false to train on a randomly initialised base.")


def hub_origin(model: nn.Module, name: str, cache_dir: Path | str | None) -> dict[str, Any]:
    """Where a pretrained base came from: repo, snapshot commit, file and its sha256 (from the cache)."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = (getattr(model, "pretrained_cfg", {}) or {}).get("hf_hub_id") or hub_repo(name)
    origin: dict[str, Any] = {"kind": "hub", "name": name, "repo": None, "revision": None, "file": None,
                              "file_sha256": None}
    if cache_dir:
        origin["cache_dir"] = str(cache_dir)
    if not hub_id:
        origin["url"] = (getattr(model, "pretrained_cfg", {}) or {}).get("url")
        return origin
    repo, revision = split_hub_name(HUB_PREFIX + hub_id)
    origin["repo"] = repo
    for filename in HUB_FILES:
        path = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir) if cache_dir else None,
                                      revision=revision)
        if isinstance(path, str):
            parts = Path(path).parts
            origin.update(revision=parts[parts.index("snapshots") + 1] if "snapshots" in parts else revision,
                          file=filename, file_sha256=sha256_file(Path(path)))
            break
    return origin


def load_pretrained(name: str, num_classes: int, kwargs: dict[str, Any], cache_dir: Path | str | None = None,
                    revision: str | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=True)`` from the hub or, offline, the cache; ``revision`` pins a
    snapshot commit (as recorded by :func:`hub_origin`)."""
    import timm

    repo = hub_repo(name)
    model_name, overlay = name, None
    if revision and name.startswith(HUB_PREFIX):
        model_name = f"{HUB_PREFIX}{split_hub_name(name)[0]}@{revision}"
    elif revision and repo:
        overlay = {"hf_hub_id": f"{repo}@{revision}"}
    cache = cache_root(cache_dir)
    with offline_unless_reachable() as offline:
        try:
            return timm.create_model(model_name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay,
                                     cache_dir=os.fspath(cache_dir) if cache_dir else None, **kwargs)
        except Exception as err:  # noqa: BLE001 - hub, network and cache errors come in many types
            raise _failure(name, err, offline, repo, cache) from None
