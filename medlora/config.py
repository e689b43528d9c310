"""Typed, validated configuration. YAML is read here and nowhere else.

A config file becomes a :class:`Config` (pydantic models with ``extra="forbid"``): an unknown or
mistyped key is a :class:`~medlora.errors.ConfigError` that names the key and the allowed keys.
``--set a.b=c`` overrides are applied to the raw mapping before validation, so they are validated
exactly like the file.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import METHODS, Method, Pipeline


class _Strict(BaseModel):
    """Unknown keys are errors; a validated config is frozen (derived values go into a copy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthConfig(_Strict):
    """Synthetic phantoms written to ``data.root`` when it does not hold them yet with these settings."""

    patients: int = Field(60, ge=6)
    images_per_patient: int = Field(3, ge=1)
    size: int = Field(64, ge=16)
    abnormal_fraction: float = Field(0.34, gt=0, lt=1)
    seed: int = 0
    # easy: large dense nodule on a flat background (tests that need a near-perfect model);
    # subtle: small faint nodule among vessel look-alikes on textured lungs with varied anatomy (the demos)
    difficulty: Literal["easy", "subtle"] = "easy"
    # multi-label phantoms: each study carries each of these lesion kinds independently (probability
    # abnormal_fraction); labels.csv gets one 0/1 column per kind instead of the normal/abnormal label
    findings: list[Literal["nodule", "effusion", "cardiomegaly", "calcification"]] | None = None
    # which hospital's scanner the phantoms imitate (medlora.io.synth.SITES): a = the demo's own; b = a
    # second site (blurrier, noisier, offset intensities, other manufacturer, other patients)
    site: Literal["a", "b"] = "a"


class SplitConfig(_Strict):
    """Patient-level, label-stratified split fractions; persisted beside the data and reused."""

    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    # where the split is persisted; default .medlora/splits/<data.name>.csv under the working directory
    # (decided in medlora.io.prepare.default_split_file; .medlora/ is git-ignored)
    file: Path | None = None
    column: str | None = None  # labels-CSV column with each sample's official split (train/val/test); no draw

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


LabelKey = Literal["path", "patient_id", "study_uid", "series_uid", "accession"]


class DataConfig(_Strict):
    """Where the studies are and how their labels are joined."""

    name: str = "dataset"
    root: Path
    labels: Path | None = None  # CSV; default <root>/labels.csv
    label_key: LabelKey = "study_uid"
    key_column: str | None = None  # CSV column holding the key; default = label_key
    label_column: str = "label"
    # binary: one positive class (``abnormal``) against the rest; multiclass: one of ``classes`` per
    # study (softmax); multilabel: any of ``findings`` per study (one sigmoid each). See medlora.io.findings
    task: Literal["binary", "multiclass", "multilabel"] = "binary"
    classes: list[str] = Field(default_factory=lambda: ["normal", "abnormal"])
    abnormal: str = "abnormal"
    findings: list[str] | None = None  # multilabel: finding columns of the labels CSV (or names in label_column)
    normal: str | None = None  # multiclass: the normal class; multilabel: the "no finding" column or name
    uncertain: Literal["ignore", "positive", "negative"] = "ignore"  # multilabel: what -1 in a finding column means
    ordinal: bool = False  # multiclass: classes are ordered grades (quadratic-weighted kappa is reported)
    card: Path | None = None
    synth: SynthConfig | None = None  # if set and root is missing, synthesise phantoms there
    split: SplitConfig = Field(default_factory=SplitConfig)
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: Path | None = None  # cache: disk; default .medlora/cache/<fingerprint> (medlora.transforms.pipeline)
    # site secret of the HMAC patient/study keys (created on first use, mode 0600; never logged);
    # default $MEDLORA_SECRET_FILE, else $XDG_CONFIG_HOME/medlora/site.key (~/.config/medlora/site.key)
    secret_file: Path | None = None
    strict: bool = False  # any skipped input fails the ingest
    # a DICOM series of >= volume_min_slices single-frame slices of these modalities becomes a volume
    volume_min_slices: int = Field(8, ge=2)
    volume_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR"])
    # modality of files that carry none (NIfTI); default: the data card's modality, else "unknown"
    modality: str | None = None
    slice_spacing_tolerance: float = Field(0.1, gt=0, lt=1)  # allowed |spacing - median| / median
    # a volume candidate whose geometry is inconsistent: its slices (frames) become 2D samples (reported)
    volume_fallback: bool = True
    # who a file belongs to (medlora.io.identity): tags (blank ones derived from folders), folder:N, labels[:COLUMN]
    identity: str = "tags"

    @field_validator("identity")
    @classmethod
    def _identity_form(cls, v: str) -> str:
        if not re.fullmatch(r"tags|folder:[1-9][0-9]*|labels(:[^:]+)?", v):
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


class WindowConfig(_Strict):
    """Intensity windowing. ``mode``: ``dicom`` (the file's VOI LUT / window, else min-max),
    ``preset`` (named CT window), ``manual`` (center/width), ``percentile`` (lower/upper)."""

    mode: Literal["dicom", "preset", "manual", "percentile"] = "dicom"
    preset: str | None = None
    center: float | None = None
    width: float | None = None
    lower: float = 0.5
    upper: float = 99.5

    @model_validator(mode="after")
    def _complete(self) -> WindowConfig:
        if self.mode == "preset" and not self.preset:
            raise ValueError("preprocess.window.mode=preset needs preprocess.window.preset")
        if self.mode == "manual" and (self.center is None or self.width is None or self.width <= 0):
            raise ValueError("preprocess.window.mode=manual needs center and a positive width")
        return self


class ViewConfig(_Strict):
    """How a volume becomes 2D samples: ``slice`` (central), ``every_k``, ``slab``, ``2.5d``, ``mip``
    across ``axis`` of the RAS volume (2 axial, 1 coronal, 0 sagittal); see :mod:`medlora.transforms.views`."""

    kind: Literal["slice", "every_k", "slab", "2.5d", "mip"] = "slice"
    k: int = Field(4, ge=1)
    slab: int = Field(5, ge=1)
    axis: int = Field(2, ge=0, le=2)
    aggregate: Literal["max", "mean"] = "max"


class PreprocessConfig(_Strict):
    window: WindowConfig = Field(default_factory=WindowConfig)
    view: ViewConfig = Field(default_factory=ViewConfig)
    image_size: int | None = None  # default: the model's input size
    spacing: list[float] | None = None  # resample volumes (mm) before views
    augment: bool = True


class LoraConfigModel(_Strict):
    r: int = Field(8, ge=1)
    alpha: float = 16.0
    dropout: float = Field(0.1, ge=0, lt=1)
    targets: str | list[str] = "attn_qkv"  # a preset name or explicit module names
    blocks: list[int] | None = None  # adapt only these transformer blocks (negative: from end; Swin: over all stages)
    use_dora: bool = False
    use_rslora: bool = False


DEFAULT_BACKBONE = "vit_small_patch16_224"


def folder_architecture(folder: Path) -> str | None:
    """The timm architecture named in a ``save_pretrained`` folder's ``config.json`` (None when absent)."""
    import json

    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if arch is None and isinstance(cfg, dict) and isinstance(cfg.get("pretrained_cfg"), dict):
        arch = cfg["pretrained_cfg"].get("architecture")
    return arch if isinstance(arch, str) and arch else None


class ModelConfig(_Strict):
    # default: the architecture in a ``model.weights`` folder's config.json, else DEFAULT_BACKBONE
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = False  # timm / hf-hub: weights from the hub or, offline, the Hugging Face cache
    # a .safetensors/.pth file, or a folder in timm/Hugging Face save_pretrained layout (config.json +
    # model.safetensors) for air-gapped sites, or a medlora base_card.md (stands for the file it names)
    weights: Path | None = None
    cache_dir: Path | None = None  # Hugging Face cache for model.pretrained (default: HF_HUB_CACHE / HF_HOME/hub)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to timm.create_model
    method: Method = "lora"
    lora: LoraConfigModel = Field(default_factory=LoraConfigModel)

    @model_validator(mode="before")
    @classmethod
    def _backbone_from_folder(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("backbone") or not data.get("weights"):
            return data
        folder = Path(data["weights"])
        if not folder.is_dir():
            return data
        arch = folder_architecture(folder)
        if arch is None:
            raise ValueError(f"model.weights folder {folder} has no config.json naming a timm 'architecture' "
                             "(timm save_pretrained / save_for_hf layout); set model.backbone to its timm name")
        return {**data, "backbone": arch}

    @field_validator("weights")
    @classmethod
    def _card_to_weights(cls, v: Path | None) -> Path | None:
        """A base card (``medlora pretrain``'s ``base_card.md``) stands for the weights file it names."""
        if v is not None and Path(v).suffix == ".md" and Path(v).is_file():
            from .basecard import weights_of

            try:
                return weights_of(Path(v))
            except ConfigError as err:
                raise ValueError(str(err).removeprefix("model.weights: ")) from None
        return v

    @model_validator(mode="after")
    def _one_weight_source(self) -> ModelConfig:
        if self.pretrained and self.weights is not None:
            raise ValueError("set model.pretrained: true or model.weights: PATH, not both")
        if self.cache_dir is not None and not self.pretrained:
            raise ValueError("model.cache_dir is where model.pretrained weights are looked up; "
                             "set model.pretrained: true or drop model.cache_dir")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    patience: int = Field(5, ge=1)
    num_workers: int = Field(0, ge=0)
    device: str = "auto"
    compile: bool = False
    threads: int | None = None
    seed: int = 0
    # multilabel: weight each finding's positives by negatives/positives of the training split (BCE pos_weight)
    pos_weight: bool = False
    # the head trains on pre-logits features standardised by the training images' mean and spread (as
    # MAE's linear probe), folded into the head when training ends, so the saved head is plain timm.
    # auto: only where the features are frozen (linear probe); true: also under LoRA / full fine-tuning
    head_norm: Literal["auto"] | bool = "auto"


class EvaluateConfig(_Strict):
    operating_point: str = "youden"  # youden | sensitivity:0.95 | specificity:0.90
    bootstrap: int = Field(2000, ge=0)
    ci: float = Field(0.95, gt=0, lt=1)
    subgroups: list[str] = Field(default_factory=list)
    # temperature / Platt scaling of study scores, fitted on validation studies only (evaluate.recalibrate)
    calibration: Literal["none", "temperature", "platt"] = "none"
    # fewer test studies than this in either class: the bundle says the test set is too small
    min_per_class: int = Field(10, ge=1)

    @field_validator("operating_point")
    @classmethod
    def _policy(cls, v: str) -> str:
        name, _, value = v.partition(":")
        if name == "youden" and not value:
            return v
        if name in {"sensitivity", "specificity"}:
            try:
                target = float(value)
            except ValueError:
                target = -1.0
            if 0 < target < 1:
                return v
        raise ValueError(f"evaluate.operating_point={v!r}; allowed: youden, sensitivity:T, specificity:T (0<T<1)")


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class TrackingConfig(_Strict):
    uri: str | None = None  # default: MLFLOW_TRACKING_URI, else MLflow's default local store
    experiment: str | None = None  # default: the dataset name

    @field_validator("uri")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        """The config is logged with every run: credentials come from the environment instead."""
        from urllib.parse import urlsplit

        if v and urlsplit(v).password is not None:
            raise ValueError(f"{redact_uri(v)} holds a password, and the config is logged with every run; write "
                             "the URI without it and set PGPASSWORD or a ~/.pgpass line (a database) or "
                             "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (an MLflow server)")
        return v


class RayConfig(_Strict):
    """Where a sweep's points run with ``fewshot.executor: ray``, and what each point asks for."""

    address: str | None = None  # host:port of a running cluster, ray://host:10001, auto; unset: a Ray of this machine
    cpus_per_point: float = Field(1.0, gt=0)  # Ray resources reserved by each (method, shots, seed) task
    gpus_per_point: float = Field(0.0, ge=0)
    max_retries: int = Field(1, ge=0)  # reruns of a point whose worker process or node died
    connect_timeout: float = Field(5.0, gt=0)  # seconds to wait for ``address`` to answer


class FewShotConfig(_Strict):
    shots: list[int | Literal["all"]] = Field(default_factory=lambda: [1, 5, 10, "all"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    methods: list[Method] = Field(default_factory=lambda: list(METHODS))
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-method train.* values
    executor: Literal["local", "ray"] = "local"  # where the points run: this process, or Ray tasks
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _overrides_are_train_keys(self) -> FewShotConfig:
        """``overrides`` maps a method to ``train.*`` values; anything else names the allowed keys."""
        allowed = sorted(set(TrainConfig.model_fields) - {"seed"})  # the sweep sets the seed
        for method, values in self.overrides.items():
            if method not in METHODS:
                raise ValueError(f"fewshot.overrides.{method}: unknown method; allowed: {', '.join(sorted(METHODS))}")
            for key in values:
                if key not in allowed:
                    raise ValueError(f"fewshot.overrides.{method}.{key}: not a train key; allowed: {', '.join(allowed)}")
            try:
                TrainConfig.model_validate(values)  # types and ranges, like train.* itself
            except ValidationError as err:
                first = err.errors()[0]
                raise ValueError(f"fewshot.overrides.{method}.{first['loc'][0]}: {first['msg']}") from None
        if any(isinstance(k, int) and k < 1 for k in self.shots) or not self.shots or not self.seeds or not self.methods:
            raise ValueError("fewshot.shots (>= 1 or 'all'), seeds and methods must be non-empty")
        return self


class OneClassConfig(_Strict):
    """One-class anomaly mode (``pipeline: oneclass``): fit on normal training studies only; the
    anomaly score is a distance in the ViT's feature space."""

    score: Literal["knn", "mahalanobis"] = "knn"
    k: int = Field(5, ge=1)  # neighbours of the kNN score
    adapter: Path | None = None  # a medlora export (adapter/ + medlora.json): features after LoRA adaptation


class PretrainConfig(_Strict):
    """Masked-autoencoder pretraining of the base on a site's unlabelled studies (He et al. 2022).

    ``medlora pretrain CONFIG`` trains it; a config with this section makes ``medlora run`` adapt
    the pretrained base (pretrained once, then reused from ``out`` while data and settings are the
    same). The encoder is ``model.backbone`` with ``model.kwargs``, starting from ``model.weights`` /
    ``model.pretrained`` when set; the input is ``preprocess`` as for training; ``train.device``,
    ``train.threads``, ``train.num_workers`` and ``train.seed`` apply.
    """

    mask_ratio: float = Field(0.75, gt=0, lt=1)  # fraction of patches hidden from the encoder
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1.5e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(2.0, ge=0)
    decoder_dim: int = Field(128, ge=8)
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    norm_pix_loss: bool = True  # the target is each patch's pixels normalised by its own mean/std
    # where bases are kept: <out>/<data.name>-<key>/ with key = data fingerprint + these settings
    # (default runs/pretrain under the working directory)
    out: Path | None = None

    @model_validator(mode="after")
    def _heads_divide(self) -> PretrainConfig:
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"pretrain.decoder_dim={self.decoder_dim} is not divisible by "
                             f"pretrain.decoder_heads={self.decoder_heads}")
        return self


class Config(_Strict):
    pipeline: Pipeline = "classify"  # see medlora.registry.PIPELINES
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    fewshot: FewShotConfig | None = None
    oneclass: OneClassConfig = Field(default_factory=OneClassConfig)
    pretrain: PretrainConfig | None = None  # adapt a base medlora pretrains on the training images

    @model_validator(mode="after")
    def _calibration_needs_probabilities(self) -> Config:
        if self.pipeline == "oneclass" and self.evaluate.calibration != "none":
            raise ValueError(f"evaluate.calibration={self.evaluate.calibration!r} with pipeline: oneclass; one-class "
                             "scores are distances, not probabilities, so they are not calibrated (use 'none')")
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> Config:
        if self.train.pos_weight and self.data.task != "multilabel":
            raise ValueError(f"train.pos_weight applies to data.task multilabel, not {self.data.task}")
        if self.pipeline == "oneclass" and self.data.task == "multiclass" and self.data.normal is None:
            raise ValueError("pipeline oneclass scores 'any finding' against normal: data.task multiclass needs "
                             "data.normal (the class of normal studies)")
        if self.data.task != "binary" and self.evaluate.calibration != "none":
            raise ValueError(f"evaluate.calibration={self.evaluate.calibration!r} recalibrates the one score of data.task "
                             f"binary; a {self.data.task} run's per-finding scores are not recalibrated (use 'none')")
        return self


def _parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, booleans, lists, null)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw config mapping (in place, and returned)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (a pydantic error location) of ``model``."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
        for arg in getattr(current, "__args__", ()):  # Optional[Model]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Config, e["loc"])
            lines.append(f"  unknown key {key!r}; allowed here: {', '.join(allowed)}")
        elif e["type"] == "missing":
            lines.append(f"  missing required key {key!r}")
        else:
            shown = redact_uri(e["input"]) if isinstance(e.get("input"), str) else e.get("input")
            got = f" (got {shown!r})" if key else ""  # a whole-config check: the input is the config
            lines.append(f"  {key or '<root>'}: {e['msg']}{got}")
    return "\n".join(lines)


def path_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """The dotted keys of every path-valued field (``data.root``, ``model.weights`` ...)."""
    keys: list[str] = []
    for name, info in (model or Config).model_fields.items():
        args = getattr(info.annotation, "__args__", ()) or (info.annotation,)
        if Path in args:
            keys.append(prefix + name)
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys += path_keys(arg, f"{prefix}{name}.")
    return keys


MUST_EXIST = ("data.card", "data.labels", "model.weights", "oneclass.adapter")  # inputs read, never written


def _get(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value


def _absolute(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """``raw`` with every relative path value made absolute against ``base_dir`` (in place)."""
    for key in path_keys():
        value = _get(raw, key)
        if isinstance(value, str | Path) and str(value) and not Path(value).is_absolute():
            _set(raw, key, str(Path(base_dir) / value))
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate a raw mapping into a frozen :class:`Config`; relative paths resolve against ``base_dir``
    (before validation: the validated config is never changed afterwards)."""
    if base_dir is not None:
        raw = _absolute(copy.deepcopy(raw), base_dir)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None, base_dir: Path | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides, validate.

    Relative paths written in the config file resolve against the file's folder (``base_dir``
    when given), so a config works from any working directory; relative paths in ``--set``
    overrides resolve against the current directory, where the user typed them. Input files the
    config names (data card, labels, weights, adapter) must exist: the error shows the path as
    written and as resolved.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    written = {k: _get(raw, k) for k in MUST_EXIST}
    _absolute(raw, Path(base_dir) if base_dir is not None else path.resolve().parent)
    given = apply_overrides({}, overrides or [])
    written.update({k: _get(given, k) for k in MUST_EXIST if _get(given, k) is not None})
    apply_overrides(raw, overrides or [])
    for key in path_keys():
        value = _get(given, key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            _set(raw, key, str(Path.cwd() / value))
    cfg = config_from_dict(raw, str(path))
    for key in MUST_EXIST:
        resolved = _get(cfg.model_dump(), key)
        if resolved is not None and not Path(resolved).exists():
            raise ConfigError(f"{key}: {written[key]!s} does not exist (resolved to {resolved}; relative paths in a "
                              f"config file resolve against its folder {path.resolve().parent})")
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (paths as strings)."""
    return cfg.model_dump(mode="json")

