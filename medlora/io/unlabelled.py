"""The images self-supervised pretraining may see: unlabelled studies, or a labelled dataset's training split.

A folder without a labels file is ingested without labels (every readable image is used; nothing is
held out, since nothing is evaluated on it). A labelled dataset (a labels file, or phantoms to
synthesise) goes through the usual ingest → patient-level split → leakage audit, and only its
**training** split is returned: the validation and test studies that will later judge a model
adapted from the pretrained base are never seen during pretraining.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import DataConfig
from .datacard import card_for_run
from .ingest import run_ingest
from .prepare import PreparedData, fingerprint, prepare_dataset

log = logging.getLogger(__name__)


@dataclass
class PretrainData:
    data: PreparedData  # manifest of the images pretraining uses (labels ignored)
    used: str  # which images, in words, for the base card

    @property
    def images(self) -> int:
        return len(self.data.manifest)


def is_labelled(cfg: DataConfig) -> bool:
    """A labels file exists (or phantoms with labels are to be synthesised)."""
    labels = Path(cfg.labels) if cfg.labels else Path(cfg.root) / "labels.csv"
    return labels.is_file() or cfg.synth is not None


def prepare_pretraining_data(cfg: DataConfig) -> PretrainData:
    """The file-level manifest pretraining reads (views are expanded by the caller, as for training)."""
    if is_labelled(cfg):
        full = prepare_dataset(cfg)
        train = full.split("train").reset_index(drop=True)
        data = PreparedData(train, full.skipped, full.root, fingerprint(train), full.split_file, full.card,
                            full.key_scheme)
        used = f"training split only, {train['patient_key'].nunique()} patients; validation and test never seen"
    else:
        card = card_for_run(cfg)
        ingest = run_ingest(cfg, labelled=False)
        manifest = ingest.manifest.assign(split="train")
        data = PreparedData(manifest, ingest.skipped, ingest.root, fingerprint(manifest), Path(), card,
                            ingest.key_scheme)
        used = f"every readable image of an unlabelled folder, {manifest['patient_key'].nunique()} patients"
    log.info("pretraining on %d images (%s)", len(data.manifest), used)
    return PretrainData(data, used)
