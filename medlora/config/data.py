"""The ``data:`` section: where the studies are, how their labels are joined, how they are split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict, shown

Finding = Literal["nodule", "effusion", "cardiomegaly", "calcification"]


class SynthConfig(Strict):
    """Synthetic phantoms written to ``data.root`` when it does not hold them yet with these settings."""

    patients: int = Field(60, ge=6, description="patients (at least 6)")
    images_per_patient: int = Field(3, ge=1, description="images of each patient")
    size: int = Field(64, ge=16, description="image side in pixels")
    abnormal_fraction: float = Field(0.34, gt=0, lt=1,
                                     description="fraction of abnormal studies (multi-label: of each finding)")
    seed: int = Field(0, description="seed of the phantoms")
    difficulty: Literal["easy", "subtle"] = Field(
        "easy", description="`easy`: a large dense nodule on a flat background (for tests that need a near-perfect "
        "model); `subtle`: a small faint nodule among vessel look-alikes on textured lungs with varied anatomy "
        "(the demos)")
    findings: list[Finding] | None = Field(
        None, description="multi-label phantoms: each study carries each of these lesion kinds (`nodule`, "
        "`effusion`, `cardiomegaly`, `calcification`) independently, with probability `abnormal_fraction`; "
        "`labels.csv` gets one 0/1 column per kind instead of the normal/abnormal label")
    lesion_slices: int | None = Field(
        None, ge=1, description="volume phantoms with the lesion on few slices: the nodule spans about this many "
        "slices (an ellipsoid) at a random height of the series, so most slices of an abnormal study show nothing "
        "(binary phantoms; default: a sphere at the centre)")
    site: Literal["a", "b"] = Field(
        "a", description="which hospital's scanner the phantoms imitate (`medlora.io.synth.SITES`): `a` the demo's "
        "own; `b` a second site (blurrier, noisier, offset and compressed intensities, thicker slices, another "
        "manufacturer, other patients), to try `medlora validate` offline")


class SplitConfig(Strict):
    """Patient-level, label-stratified split fractions; persisted beside the data and reused."""

    train: float = Field(0.6, gt=0, lt=1, description="fraction of patients in the training split")
    val: float = Field(0.2, gt=0, lt=1, description="fraction of patients in the validation split")
    test: float = Field(0.2, gt=0, lt=1, description="fraction of patients in the test split; the three sum to 1")
    seed: int = Field(0, description="seed of the split draw")
    file: Path | None = Field(
        None, description="where the split is persisted and reused from (`medlora.io.prepare.default_split_file`)",
        json_schema_extra=shown("`.medlora/splits/<data.name>.csv`"))
    column: str | None = Field(
        None, description="labels-CSV column holding each sample's split (train/val/test), used as given "
        "(needs `label_key: path`)")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


LabelKey = Literal["path", "patient_id", "study_uid", "series_uid", "accession"]
IDENTITY_FORM = r"tags|folder:[1-9][0-9]*|labels(:[^:]+)?"


class DataConfig(Strict):
    """Where the studies are and how their labels are joined."""

    name: str = Field("dataset", description="dataset name; the MLflow experiment")
    root: Path = Field(description="folder of studies (DICOM files with or without suffix)")
    labels: Path | None = Field(None, description="labels CSV", json_schema_extra=shown("`<root>/labels.csv`"))
    label_key: LabelKey = Field(
        "study_uid", description="what the CSV's key identifies: `path`, `patient_id`, `study_uid`, `series_uid`, "
        "`accession`. A `path` key names a file or a folder (its files inherit the label) and may be written "
        "relative to `data.root`, relative to the CSV's own folder, or absolute (normalised, symlinks resolved)")
    key_column: str | None = Field(None, description="CSV column holding the key",
                                   json_schema_extra=shown("DICOM keyword of `label_key`"))
    label_column: str = Field("label", description="CSV column holding the label")
    task: Literal["binary", "multiclass", "multilabel"] = Field(
        "binary", description="`binary` (one positive class against the rest), `multiclass` (one of `classes` per "
        "study, softmax), `multilabel` (any of `findings`, one sigmoid each); see *Several findings per study*")
    classes: list[str] = Field(default_factory=lambda: ["normal", "abnormal"],
                               description="class names, in label-index order")
    abnormal: str = Field("abnormal", description="binary: the positive class, one of `classes`")
    findings: list[str] | None = Field(
        None, description="multilabel: the findings, as labels-CSV columns (0/1, blank unknown, −1 uncertain) or "
        "names in `label_column` (`|`-separated)")
    normal: str | None = Field(
        None, description="multiclass: the normal class (\"any finding\" = 1 − P(normal)); multilabel: the "
        "\"no finding\" column or name")
    uncertain: Literal["ignore", "positive", "negative"] = Field(
        "ignore", description="multilabel: −1 means unknown (`ignore`, masked), `positive` or `negative`")
    ordinal: bool = Field(False, description="multiclass: ordered grades; the quadratic-weighted kappa is reported")
    card: Path | None = Field(
        None, description="data card (`data_cards/<name>.md`): validated at the start of every run, must agree with "
        "`data.classes`/`data.abnormal`; logged as `data_card.md` and tags `medlora.data_card.name/version`; its name "
        "is the MLflow experiment")
    synth: SynthConfig | None = Field(
        None, description="write phantoms into `root` unless it holds them with these settings (`synth.json`; a "
        "folder with other files is refused); `findings` makes them multi-label")
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="patient-level stratified split (multilabel: per finding), "
        "persisted to `split.file` and reused")
    cache: Literal["memory", "disk", "none"] = Field(
        "memory", description="`memory` (CacheDataset), `disk` (PersistentDataset keyed by file content) or `none`")
    cache_dir: Path | None = Field(
        None, description="folder of `cache: disk` (`medlora.transforms.pipeline`)",
        json_schema_extra=shown("`.medlora/cache/<fingerprint>`"))
    secret_file: Path | None = Field(
        None, description="the site secret (256 random bits, created on first use with mode 0600, outside the run "
        "outputs): patient/study keys are HMAC-SHA256 under it. Never logged or exported (runs carry only "
        "`medlora.key_scheme = hmac-sha256:<key id>`). **Back it up with the data**: if it is lost, every patient "
        "gets a new key and persisted splits no longer match and are drawn anew",
        json_schema_extra=shown("`$MEDLORA_SECRET_FILE`, else `~/.config/medlora/site.key`"))
    strict: bool = Field(False, description="any skipped file fails the ingest (after the report is written; the "
                         "error names it and the first files)")
    volume_min_slices: int = Field(
        8, ge=2, description="a DICOM series with at least this many slices (or frames) of `data.volume_modalities` "
        "becomes a volume; smaller series stay 2D images")
    volume_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR"],
                                         description="modalities assembled into volumes")
    modality: str | None = Field(
        None, description="the modality of samples whose files carry none (NIfTI); the model card lists the "
        "modalities of the run's samples and says `unknown` out loud",
        json_schema_extra=shown("the data card's `modality`, else `unknown`"))
    slice_spacing_tolerance: float = Field(
        0.1, gt=0, lt=1, description="allowed relative deviation of slice spacing (|spacing − median| / median); "
        "beyond it the series is not a volume (gap / uneven spacing)")
    volume_fallback: bool = Field(
        True, description="a volume candidate whose geometry is inconsistent (a gap, a broken slice in the middle, a "
        "multi-frame object without per-frame positions) is used as 2D samples, one per slice or frame, with a note "
        "in the report; `false` skips its files with the reason")
    identity: str = Field(
        "tags", description="who a file belongs to (`medlora/io/identity.py`): `tags` = PatientID / "
        "StudyInstanceUID / SeriesInstanceUID, and where they are blank, one series per folder and geometry, one "
        "study per folder, the patient of the same study's other files or else the folder; `folder:N` = the first N "
        "folder levels under `data.root` are the patient (`folder:1`: one folder per patient); `labels` / "
        "`labels:COLUMN` = the labels CSV's `patient` (or `COLUMN`) column names each path's patient (needs "
        "`label_key: path`). A NIfTI file (no tags) is its own patient under `tags` and follows `folder:N` / "
        "`labels` otherwise")

    @field_validator("identity")
    @classmethod
    def _identity_form(cls, v: str) -> str:
        if not re.fullmatch(IDENTITY_FORM, v):
            raise ValueError(f"data.identity={v!r}; accepted: tags, folder:N (N >= 1), labels or labels:COLUMN")
        return v

    @model_validator(mode="after")
    def _abnormal_is_a_class(self) -> DataConfig:
        if self.task == "binary" and self.abnormal not in self.classes:
            raise ValueError(f"data.abnormal={self.abnormal!r} is not one of data.classes={self.classes}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"data.classes must hold at least two distinct names, got {self.classes}")
        return self

    @model_validator(mode="after")
    def _keys_of_the_task(self) -> DataConfig:
        """Each task reads its own keys; one set for another task would do nothing, so it is refused."""
        own = {"binary": {"classes", "abnormal"}, "multiclass": {"classes", "normal", "ordinal"},
               "multilabel": {"findings", "normal", "uncertain"}}
        for key in sorted({"classes", "abnormal", "findings", "normal", "uncertain", "ordinal"} - own[self.task]):
            field = type(self).model_fields[key]
            default = field.default_factory() if field.default_factory is not None else field.default
            if key in self.model_fields_set and getattr(self, key) != default:  # a dumped config repeats defaults
                tasks = [t for t, keys in own.items() if key in keys]
                raise ValueError(f"data.{key} applies to data.task {' or '.join(tasks)}, not {self.task}")
        if self.task == "multilabel":
            if not self.findings or len(set(self.findings)) != len(self.findings):
                raise ValueError(f"data.task multilabel needs data.findings: distinct finding names, got {self.findings}")
            if self.normal is not None and self.normal in self.findings:
                raise ValueError(f"data.normal={self.normal!r} is the no-finding state, not a finding")
        if self.task == "multiclass" and self.normal is not None and self.normal not in self.classes:
            raise ValueError(f"data.normal={self.normal!r} is not one of data.classes={self.classes}")
        return self

    @property
    def outputs(self) -> list[str]:
        """What the model's head scores, one output each: the findings (multilabel) or the classes."""
        return list(self.findings or []) if self.task == "multilabel" else list(self.classes)
