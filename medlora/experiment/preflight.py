"""Checks that need no data, run before the ingest and before any long work.

A run that would fail on a misspelt backbone, an unusable device or a data card that does not
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


def preflight(cfg: Config) -> None:
    """Fail fast on what can be checked without data: backbone name, device, base card, data card."""
    from ..device import resolve_device
    from ..io.datacard import check_card_matches, load_card

    if cfg.model.weights is None or cfg.model.backbone:
        check_backbone(cfg.model.backbone)
    resolve_device(cfg.train.device)
    if cfg.model.weights is not None and cfg.model.backbone:  # a medlora-pretrained base: card and file agree
        from ..basecard import check_weights

        check_weights(cfg.model.weights, cfg.model.backbone, cfg.model.kwargs)
    if cfg.data.card is not None:
        check_card_matches(load_card(cfg.data.card), cfg.data)
