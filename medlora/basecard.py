"""The base card: a short Markdown file beside a base medlora pretrained, saying what it is.

``base_card.md`` starts with a YAML front matter block (the machine-readable record: timm name and
kwargs, weights file and its sha256, pretraining method, data, epochs, mask ratio, MLflow run) and
continues with the same facts as prose for a reader. ``model.weights`` accepts the card itself
(:func:`weights_of` finds the safetensors it names) or the safetensors next to it
(:func:`record_beside` finds the card), and ``medlora.json`` / the model card of every run on that
base cite the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .frontmatter import render_front_matter, split_front_matter
from .hashing import sha256_file

CARD = "base_card.md"
MAE = "masked autoencoder"  # the card's pretraining.method for a base medlora pretrained


def render(record: dict[str, Any]) -> str:
    """The card's text: front matter with ``record``, then the same facts as prose."""
    data, pre = record.get("data", {}), record.get("pretraining", {})
    kwargs = ", ".join(f"{k}={v}" for k, v in record.get("timm_kwargs", {}).items())
    lines = [
        render_front_matter(record), "",
        f"# Base card: `{record['timm_name']}` pretrained by medlora on `{data.get('name')}`", "",
        f"- Architecture: timm `{record['timm_name']}` ({kwargs or 'default kwargs'}), "
        f"{record.get('encoder_params', 0) / 1e6:.2f} M encoder parameters.",
        f"- Weights: `{record['weights']}`, sha256 `{record['sha256']}` (the encoder only; no classifier head).",
        f"- Method: {pre.get('method')} (He et al. 2022): the encoder saw {1 - pre.get('mask_ratio', 0):.0%} of the "
        f"patches of each image (mask ratio {pre.get('mask_ratio')}), a {pre.get('decoder_depth')}-block decoder "
        f"reconstructed the rest; loss on the masked patches only"
        f"{', pixels normalised per patch' if pre.get('norm_pix_loss') else ''}.",
        f"- Training: {pre.get('epochs')} epochs, batch {pre.get('batch_size')}, lr {pre.get('lr')}, final loss "
        f"{pre.get('final_loss', float('nan')):.4f}, {pre.get('seconds', 0):.0f} s on {pre.get('device')}.",
        f"- Data: {data.get('images')} unlabelled images ({data.get('used')}) of dataset `{data.get('name')}`, "
        f"fingerprint `{data.get('fingerprint')}`; labels were not used. Input {data.get('image_size')} px.",
        f"- Tracking: MLflow run `{record.get('mlflow_run_id')}` (loss curve, reconstructions, config).",
        "",
        "Use it: `model.weights: <this card or the safetensors beside it>` with the same `model.backbone` and "
        "`model.kwargs`.",
        "",
    ]
    return "\n".join(lines)


def read(card: Path) -> dict[str, Any]:
    """The front matter record of a base card (a :class:`ConfigError` naming the file if it has none)."""
    card = Path(card)
    try:
        record, _ = split_front_matter(card.read_text(encoding="utf-8", errors="replace"), str(card))
    except ConfigError:
        record = {}
    if not {"weights", "sha256", "timm_name"} <= set(record):
        raise ConfigError(f"model.weights: {card} is not a medlora base card (no front matter with weights, sha256 "
                          f"and timm_name); give a .safetensors/.pth file or a {CARD} written by medlora pretrain")
    return record


def weights_of(card: Path) -> Path:
    """The weights file a base card names (relative to the card's folder)."""
    card = Path(card)
    weights = card.parent / read(card)["weights"]
    if not weights.is_file():
        raise ConfigError(f"model.weights: the base card {card} names {weights.name}, which is not beside it "
                          f"({weights} does not exist)")
    return weights


def record_beside(weights: Path | str | None) -> dict[str, Any] | None:
    """The record of the base card next to ``weights`` when that card describes exactly this file."""
    if weights is None:
        return None
    weights = Path(weights)
    card = weights.parent / CARD
    if not card.is_file():
        return None
    try:
        record = read(card)
    except ConfigError:
        return None
    return {**record, "card": str(card.resolve())} if record["weights"] == weights.name else None


def pretraining_method(weights: Path | str | None) -> str | None:
    """How the base in ``weights`` was pretrained, as its card says (:data:`MAE`); ``None`` without a card."""
    record = record_beside(weights)
    return record.get("pretraining", {}).get("method") if record else None


def check_weights(weights: Path, timm_name: str, timm_kwargs: dict[str, Any]) -> None:
    """Refuse a pretrained base whose card disagrees with the file (sha256) or with the configured model."""
    record = record_beside(weights)
    if record is None:
        return
    actual = sha256_file(weights)
    if actual != record["sha256"]:
        raise ConfigError(f"model.weights: {weights} has sha256 {actual[:12]}…, but its base card {record['card']} "
                          f"says {record['sha256'][:12]}… (the file changed after pretraining)")
    if (record["timm_name"], record.get("timm_kwargs", {})) != (timm_name, dict(timm_kwargs)):
        raise ConfigError(f"model.weights: {weights} was pretrained as {record['timm_name']} with kwargs "
                          f"{record.get('timm_kwargs', {})}, but the config says model.backbone={timm_name!r}, "
                          f"model.kwargs={dict(timm_kwargs)}; use the card's values")
