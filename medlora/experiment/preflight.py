"""Checks that need no data, run before the ingest and before any long work.

A run that would fail on a misspelt backbone, base weights that cannot be loaded or do not fit
(hub offline without a cached copy, a file of another shape), an input size the model cannot take,
a method its architecture does not support, an unusable device or a data card that does not
validate fails here, in seconds, instead of after the ingest. (Missing input files are refused
earlier still, when the config is loaded.)
"""

from __future__ import annotations

import difflib
import logging

from ..config import Config
from ..errors import ConfigError

log = logging.getLogger(__name__)


def check_backbone(name: str) -> None:
    """``model.backbone`` must be a timm architecture (or an ``hf-hub:`` name, resolved when loading)."""
    if name.startswith("hf-hub:"):
        return
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ConfigError(f"model.backbone={name!r} is not a timm model{hint}")


def preflight(cfg: Config, build: bool = True) -> None:
    """Fail fast on what can be checked without data: backbone name, base weights and model (``build``),
    device, base card, data card."""
    import time

    from ..device import resolve_device
    from ..io.datacard import check_card_matches, load_card
    from ..models.build import check_model

    check_backbone(cfg.model.backbone)
    if cfg.model.weights is not None and cfg.model.backbone:  # a medlora-pretrained base: card and file agree
        from ..basecard import check_weights

        check_weights(cfg.model.weights, cfg.model.backbone, cfg.model.kwargs)
    if build:
        start = time.perf_counter()
        info = check_model(cfg)
        log.info("base %s (%s) built and checked in %.1f s", info.timm_name, info.source, time.perf_counter() - start)
        if cfg.model.adapter is not None:  # a received adapter: the same base and LoRA settings, or refused now
            from ..bundle.bundle import open_bundle
            from ..bundle.continued import check_continuable
            from ..bundle.manifest import require_verified

            require_verified(cfg.model.adapter)
            check_continuable(open_bundle(cfg.model.adapter), info, cfg.model.lora)
    resolve_device(cfg.train.device)
    if cfg.data.card is not None:
        check_card_matches(load_card(cfg.data.card), cfg.data)
