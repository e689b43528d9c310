"""``medlora pretrain``: a masked-autoencoder base learned on a site's own unlabelled studies.

check (backbone, device, data card, mask ratio, patch geometry: seconds, before any data is read) →
the images (:func:`~medlora.io.unlabelled.prepare_pretraining_data`: an unlabelled folder, or a labelled
dataset's training split) → the same MONAI reading, windowing and cache as training → MAE training
(:mod:`medlora.train.pretrain`) tracked as one MLflow run (``medlora.role=pretrain``: config, data
fingerprint, per-epoch ``pretrain_loss``, ``reconstructions.png``, the base card) → the encoder as
``base.safetensors`` + ``base_card.md`` (:mod:`medlora.basecard`) that ``model.weights`` accepts.

Bases are kept under ``pretrain.out`` in one folder per key (data fingerprint + every setting that
changes the weights), so pretraining the same data with the same settings again reuses the base
instead of training it twice. An interrupted pretraining continues from its last epoch, in the same
MLflow run, when the same command is run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import basecard
from ..config import Config, PretrainConfig
from ..errors import ConfigError
from ..hashing import sha256_file
from ..io.unlabelled import PretrainData, prepare_pretraining_data
from ..models.backbone import base_state, create_base
from ..models.build import input_config
from ..models.mae import MaskedAutoencoder
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..train.loaders import make_datasets, make_loader
from ..train.pretrain import PretrainResult, pretrain_fit
from ..transforms.augment import BatchAugment
from ..transforms.samples import with_views
from . import resume
from .context import start
from .preflight import preflight

log = logging.getLogger(__name__)
WEIGHTS, STATE, CHECKPOINT, GRID = "base.safetensors", "pretrain_state.json", "checkpoint.pt", "reconstructions.png"
FILES = {"state": STATE, "checkpoint": CHECKPOINT}  # an unfinished pretraining's files in its folder (:mod:`.resume`)
DEFAULT_OUT = Path("runs") / "pretrain"


@dataclass
class PretrainSummary:
    run_id: str
    experiment: str
    tracking_uri: str
    folder: Path
    weights: Path
    card: Path
    reused: bool
    record: dict[str, Any]

    def describe(self) -> str:
        pre = self.record.get("pretraining", {})
        how = "reused (same data and settings)" if self.reused else f"pretrained in {pre.get('seconds', 0):.0f} s"
        return "\n".join([
            f"base {how}: {self.weights} (sha256 {self.record['sha256'][:12]}…)",
            f"base card: {self.card}   use it with model.weights: {self.card}",
            f"MLflow run {self.run_id} in experiment {self.experiment!r} ({self.tracking_uri}): "
            f"{pre.get('epochs')} epochs, final loss {pre.get('final_loss', float('nan')):.4f}, {GRID}",
        ])


def pretrain_identity(cfg: Config, fingerprint: str) -> dict[str, Any]:
    """What makes a pretrained base what it is: the data fingerprint and every setting that changes the
    weights (what an interrupted pretraining is resumed by, :mod:`.resume`)."""
    p = (cfg.pretrain or PretrainConfig()).model_dump(mode="json", exclude={"out"})
    m = cfg.model
    return {"data": fingerprint, "pretrain": p, "backbone": m.backbone, "kwargs": m.kwargs, "pretrained": m.pretrained,
            "weights": sha256_file(m.weights) if m.weights else None, "seed": cfg.train.seed,
            "preprocess": cfg.preprocess.model_dump(mode="json")}


def pretrain_key(cfg: Config, fingerprint: str) -> str:
    """12 hex digits over :func:`pretrain_identity`: names the base's folder and is written in its card."""
    blob = pretrain_identity(cfg, fingerprint)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_mae(cfg: Config) -> tuple[MaskedAutoencoder, dict[str, Any]]:
    """The encoder from ``model.*`` (no classifier head) wrapped in the MAE; checks mask ratio and patch
    geometry (a :class:`ConfigError` naming the value). Returns the MAE and timm's input config."""
    p = cfg.pretrain or PretrainConfig()
    encoder, _ = create_base(cfg.model, 0, seed=cfg.train.seed, save_init=False)  # the pretrained encoder is saved
    inputs = input_config(encoder, cfg.preprocess.image_size)
    mae = MaskedAutoencoder(encoder, inputs["image_size"], p.mask_ratio, p.decoder_dim, p.decoder_depth,
                            p.decoder_heads, p.norm_pix_loss)
    return mae, inputs


def _reusable(folder: Path, key: str) -> dict[str, Any] | None:
    """The record of the finished base in ``folder`` when it was made with ``key`` and is intact
    (:mod:`.resume`: a finished result of the same identity is reused, another identity refused)."""
    card, weights = folder / basecard.CARD, folder / WEIGHTS
    if not (card.is_file() and weights.is_file()):
        return None
    record = basecard.read(card)
    if record.get("pretraining", {}).get("key") != key:
        raise ConfigError(f"{folder} holds a base pretrained with other data or settings (key "
                          f"{record.get('pretraining', {}).get('key')}, now {key}); choose another output folder")
    if sha256_file(weights) != record["sha256"]:
        log.warning("%s changed since it was pretrained (sha256 differs from its card): pretraining again", weights)
        return None
    return record


def reconstruction_grid(mae: MaskedAutoencoder, images: torch.Tensor, mean: list[float], std: list[float],
                        path: Path, seed: int = 0) -> Path:
    """Input / masked input / reconstruction of a few images, one column per image, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mae.eval()
    visible, masked, recon = mae.reconstruct(images, torch.Generator(images.device).manual_seed(seed))
    m = torch.tensor(mean, device=images.device)[None, :, None, None]
    s = torch.tensor(std, device=images.device)[None, :, None, None]
    rows = [("input", images), (f"masked ({mae.mask_ratio:.0%})", masked), ("reconstruction", recon)]
    fig, axes = plt.subplots(3, len(images), figsize=(1.3 * len(images), 4.2), squeeze=False)
    for r, (title, batch) in enumerate(rows):
        shown = (batch.float() * s + m).mean(1).clamp(0, 1)
        shown = (shown * visible[:, 0] if title.startswith("masked") else shown).cpu().numpy()  # hidden: black
        for c, ax in enumerate(axes[r]):
            ax.imshow(shown[c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _record(cfg: Config, mae: MaskedAutoencoder, inputs: dict[str, Any], pdata: PretrainData, key: str,
            result: PretrainResult, weights: Path, run_id: str, device: torch.device) -> dict[str, Any]:
    p = cfg.pretrain or PretrainConfig()
    return {
        "format": 1, "timm_name": cfg.model.backbone, "timm_kwargs": dict(cfg.model.kwargs), "weights": weights.name,
        "sha256": sha256_file(weights), "encoder_params": sum(t.numel() for t in mae.encoder.parameters()),
        "source": "medlora-pretrain", "mlflow_run_id": run_id,
        "data": {"name": cfg.data.name, "fingerprint": pdata.data.fingerprint, "images": pdata.images,
                 "used": pdata.used, "image_size": inputs["image_size"]},
        "pretraining": {"method": basecard.MAE, "key": key, "epochs": p.epochs, "mask_ratio": p.mask_ratio,
                        "batch_size": p.batch_size, "lr": p.lr, "decoder_dim": p.decoder_dim,
                        "decoder_depth": p.decoder_depth, "norm_pix_loss": p.norm_pix_loss,
                        "final_loss": round(result.final_loss, 6), "seconds": round(result.seconds, 1),
                        "device": device.type,
                        "started_from": str(cfg.model.weights) if cfg.model.weights else
                        ("hub" if cfg.model.pretrained else "random init")},
    }


def slices_of_volumes(cfg: Config) -> Config:
    """The config a 2D pretraining reads: for ``preprocess.view.kind: volume`` every slice along the view's
    axis is an image (``every_k``, ``k: 1``), so the masked autoencoder learns the site's slices and the
    run inflates the base to 3D (:mod:`medlora.models.volume`); any other config as it is."""
    view = cfg.preprocess.view
    if view.kind != "volume":
        return cfg
    pre = cfg.preprocess.model_copy(update={"view": view.model_copy(update={"kind": "every_k", "k": 1})})
    return cfg.model_copy(update={"preprocess": pre})


def run_pretrain(cfg: Config, out: Path | None = None) -> PretrainSummary:
    """Pretrain (or reuse) the MAE base of ``cfg``; in ``out``, else ``pretrain.out/<data.name>-<key>``.
    A volume run's base is pretrained on the volumes' slices (:func:`slices_of_volumes`)."""
    cfg = slices_of_volumes(cfg)
    p = cfg.pretrain or PretrainConfig()
    preflight(cfg, build=False)  # the masked autoencoder below builds and checks the encoder
    mae, inputs = build_mae(cfg)  # fails fast on a bad size or model
    pdata = prepare_pretraining_data(cfg.data)
    pdata = replace(pdata, data=with_views(pdata.data, cfg.preprocess))
    ctx = start(cfg, data=pdata.data)
    identity = pretrain_identity(cfg, pdata.data.fingerprint)
    key = pretrain_key(cfg, pdata.data.fingerprint)
    folder = Path(out) if out else Path(p.out or DEFAULT_OUT) / f"{cfg.data.name}-{key}"
    done = _reusable(folder, key)
    if done is not None:
        log.info("base for these data and settings already pretrained: %s", folder / WEIGHTS)
        return PretrainSummary(done["mlflow_run_id"], ctx.experiment, ctx.uri, folder, folder / WEIGHTS,
                               folder / basecard.CARD, True, done)
    prior = resume.find_unfinished(folder, identity, what="pretraining", **FILES,
                                   remedy=f"choose another output folder or delete {folder / STATE}")
    folder.mkdir(parents=True, exist_ok=True)
    device = ctx.device
    with ctx.open_run("mae", role="pretrain", run_id=prior, log_inputs=prior is None,
                      name=f"pretrain-{cfg.model.backbone}-{cfg.data.name}-{key[:6]}", tags={T.PRETRAIN_KEY: key}) as run:
        resume.remember(folder, run.info.run_id, identity, key=key, **FILES)
        dataset = make_datasets(pdata.data, cfg, inputs, splits=("train",))["train"]
        loader = make_loader(dataset, cfg.train.model_copy(update={"batch_size": p.batch_size}), shuffle=True)
        augment = BatchAugment(seed=cfg.train.seed) if cfg.preprocess.augment else None
        mae.to(device)
        t0 = time.perf_counter()
        result = pretrain_fit(mae, loader, p, device, augment, checkpoint=folder / CHECKPOINT, on_epoch=lambda e:
                              track.log_metrics({"pretrain_loss": e.loss, "pretrain_lr": e.lr}, step=e.epoch))
        sample = torch.stack([dataset[i]["image"].as_subclass(torch.Tensor) for i in range(min(8, len(dataset)))])
        reconstruction_grid(mae, sample.to(device), inputs["mean"], inputs["std"], folder / GRID, cfg.train.seed)
        from safetensors.torch import save_file

        save_file(base_state(mae.encoder), folder / WEIGHTS, metadata={"medlora": "mae-encoder", "key": key})
        record = _record(cfg, mae, inputs, pdata, key, result, folder / WEIGHTS, run.info.run_id, device)
        (folder / basecard.CARD).write_text(basecard.render(record), encoding="utf-8")
        track.log_metrics({"pretrain_seconds": result.seconds, "pretrain_images": pdata.images,
                           "pretrain_final_loss": result.final_loss, "encoder_params": record["encoder_params"],
                           "pretrain_wall_seconds": time.perf_counter() - t0})
        for name in (GRID, basecard.CARD):
            track.log_artifact(folder / name)
        resume.forget(folder, **FILES)
    log.info("pretrained base %s (%s)", folder / WEIGHTS, folder / basecard.CARD)
    return PretrainSummary(run.info.run_id, ctx.experiment, ctx.uri, folder, folder / WEIGHTS, folder / basecard.CARD,
                           False, record)


def with_pretrained_base(cfg: Config) -> Config:
    """``cfg`` adapting the base its ``pretrain:`` section describes (pretrained now, or reused).

    The returned config names the base in ``model.weights`` and has no ``pretrain:`` section: the
    run's logged config is the one that trained its model, and the base card beside the weights
    says how the base was made (cited by ``medlora.json`` and the model card).
    """
    if cfg.pretrain is None:
        return cfg
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a pretrain: section is not run under torchrun: pretrain first with `medlora pretrain "
                          "CONFIG`, then remove pretrain: and set model.weights to the base card it prints")
    summary = run_pretrain(cfg)
    model = cfg.model.model_copy(update={"weights": summary.weights, "pretrained": False})
    return cfg.model_copy(update={"model": model, "pretrain": None})
