"""The content of ``medlora.json``: what a plain timm + peft user needs to rebuild a run's model.

:func:`run_metadata` assembles it from the run's resolved config, the built model (base record and
timm's input config), the frozen operating point, the MLflow run id and the dataset fingerprint.
:func:`medlora.bundle.layout.write_export` adds the versions, the git commit and the ``weights``
entry (the trained artifact and its sha256) when it writes the file.
"""

from __future__ import annotations

from typing import Any

from ..basecard import record_beside
from ..config import Config
from ..evaluate.recalibrate import Calibrator
from .layout import artifact_of

# preprocessing fields that are not part of the model's input contract (training-time only, or
# resolved into ``image_size`` from the model's own data config)
TRAINING_ONLY_PREPROCESS = {"image_size", "augment"}


def _labels(cfg: Config) -> dict[str, Any]:
    """Binary: the classes and the positive one; multiclass/multilabel: the task and the model's outputs."""
    data = cfg.data
    if data.task == "binary":
        return {"classes": list(data.classes), "abnormal": data.abnormal, "abnormal_index": data.classes.index(data.abnormal)}
    if data.task == "multiclass" and data.normal is None:  # no "any finding": per-class scores and the arg-max call
        return {"task": data.task, "outputs": data.outputs, "normal": None, "classes": list(data.classes),
                "abnormal": None, "abnormal_index": None}
    # the exported operating point is that of "any finding": reports read it as a binary task
    return {"task": data.task, "outputs": data.outputs, "normal": data.normal,
            "classes": [data.normal or "no finding", "any finding"], "abnormal": "any finding", "abnormal_index": None}


def run_metadata(cfg: Config, built: Any, operating_point: Any | None, run_id: str, dataset_fingerprint: str,
                 calibration: dict[str, Any] | None = None, modalities: dict[str, int] | None = None,
                 thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """The ``medlora.json`` dict of a run.

    ``built`` is the :class:`~medlora.models.build.BuiltModel` (``base``, ``data_config``);
    ``operating_point`` the frozen :class:`~medlora.evaluate.operating_point.OperatingPoint` chosen on
    validation (multiclass/multilabel: of "any finding"; ``thresholds`` holds each output's own,
    ``operating_point.per_output``); ``calibration`` the evaluation's recalibration record (only its
    fitted map is kept: ``predict`` applies it to study scores before the threshold, which is in
    calibrated units; binary task only). A base pretrained by ``medlora pretrain`` carries
    ``base.pretrain`` (its base card, pretraining MLflow run, data and settings). A full fine-tune is
    stated as a new model, not an adapter (``adapter: false``, ``summary``), so that cards and reports
    can say so. ``modalities`` counts the run's samples per modality.

    A multi-class run without ``data.normal`` has no "any finding" score and so no
    ``operating_point``: its ``threshold`` is null, ``call`` says studies are called by the arg-max
    class, and ``labels.abnormal`` is null.
    """
    method = cfg.model.method
    art = artifact_of(method)
    base = built.base.to_dict()
    card = record_beside(base.get("weights_path"))
    if card is not None:  # a base medlora pretrained: cite its card, pretraining run and data
        base["pretrain"] = {k: card[k] for k in ("card", "mlflow_run_id", "data", "pretraining") if k in card}
    return {
        "method": method,
        "adapter": art.kind == "adapter",
        "summary": art.description,
        "base": base,
        "lora": cfg.model.lora.model_dump(mode="json") if method == "lora" else None,
        "preprocess": {**built.data_config,
                       **cfg.preprocess.model_dump(mode="json", exclude=TRAINING_ONLY_PREPROCESS)},
        "labels": _labels(cfg),
        "operating_point": {"policy": cfg.evaluate.operating_point if operating_point is None else operating_point.policy,
                            "threshold": None if operating_point is None else float(operating_point.threshold),
                            "aggregate": cfg.preprocess.view.aggregate,
                            **({"call": "argmax"} if operating_point is None else {}),
                            **({"per_output": dict(thresholds)} if thresholds else {})},
        "calibration": Calibrator.from_dict(calibration).to_dict(),
        "mlflow_run_id": run_id,
        "dataset": {"name": cfg.data.name, "fingerprint": dataset_fingerprint, "modalities": modalities or {}},
    }
