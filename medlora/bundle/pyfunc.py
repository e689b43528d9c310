"""A bundle as an MLflow pyfunc model, registered in the Model Registry with alias ``candidate``.

Every method registers the same way. The pyfunc's artifacts are the bundle folder itself (the
method's artifact, ``medlora.json``, preprocessing, and the base weights when the bundle carries
them, i.e. for a randomly initialised base) plus, for a ``file`` base an adapter or head needs, that
weights file; a ``hub`` base stays a reference (timm name + state sha256) that must be in the local
hub cache where the model is loaded. A full fine-tune carries its whole model and needs no base.
:class:`MedloraPyfunc` rebuilds and verifies the model in ``load_context`` exactly as
``medlora predict`` does (a LoRA adapter is merged once there).

``mlflow.pyfunc.load_model("models:/NAME@candidate").predict(frame)`` takes a DataFrame with a
``path`` column (a DICOM file or a folder holding one study) and/or an ``image`` column (an
already-preprocessed ``C×H×W`` array, as :func:`medlora.transforms.pipeline.build_transforms`
makes; ``C×D×H×W`` for a bundle of a volume ViT, ``preprocess.view.kind: volume``) and returns one row per study: ``input`` (row number), ``study_key``, ``n_images``,
``score``, ``call``, ``error``; a multi-label or multi-class bundle adds ``score.<output>`` and
``call.<output>`` per output, a multi-class one ``class`` (the arg-max call; without ``data.normal``
``score`` and ``call`` stay null, as there is no abnormal-vs-normal score). A study that cannot be read gets no score and no call (``call`` is
null) and its reason in ``error``; a failure never reads as a negative finding. Study keys are HMACs
under the site secret of the machine that loads the model (``MEDLORA_SECRET_FILE``, else the user's
key file), so the secret is never stored with the model. ``medlora register`` exports a run first
(:func:`medlora.experiment.register.register_run`, which refuses a run whose keys were not made with a
site secret) and then calls :func:`register_bundle`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import BundleError
from ..models.backbone import LOCAL_SOURCES
from .bundle import open_bundle
from .manifest import require_verified

log = logging.getLogger(__name__)
CANDIDATE_ALIAS = "candidate"
OUTPUT_COLUMNS = ["input", "study_key", "n_images", "score", "call", "error"]

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency
    PythonModel = object  # type: ignore[misc,assignment]


class MedloraPyfunc(PythonModel):
    """An MLflow pyfunc over one bundle: base + adapter merged once at load time."""

    def load_context(self, context: Any) -> None:
        from .predict import Predictor

        bundle = open_bundle(Path(context.artifacts["bundle"]))
        if "base_weights" in context.artifacts:
            bundle.meta["base"]["weights_path"] = context.artifacts["base_weights"]
        self.predictor = Predictor([bundle], merge=bundle.method == "lora")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score each row's study path or preprocessed image; one output row per study."""
        import torch

        rows: list[dict[str, Any]] = []
        bundle = self.predictor.bundles[0]
        columns = output_columns(bundle)
        values = [c for c in columns if c not in KEY_COLUMNS]
        for i, rec in enumerate(model_input.to_dict("records")):
            image, path = rec.get("image"), rec.get("path")
            if image is not None and not (isinstance(image, float) and np.isnan(image)):
                x = torch.as_tensor(np.asarray(image, dtype=np.float32)).unsqueeze(0)
                rows.append({"input": i, "study_key": "", "n_images": 1, "error": "", **_image_scores(self.predictor, x)})
                continue
            if not path or (isinstance(path, float) and np.isnan(path)):
                rows.append(_no_call(i, "row has neither a path nor an image"))
                continue
            res = self.predictor.predict_files([Path(str(path))])
            if res.studies.empty:
                rows.append(_no_call(i, "no readable image"))
            for s in res.studies.to_dict("records"):
                row = {"input": i, "study_key": s["study_key"], "n_images": int(s["n_images"]), "error": s["error"]}
                for name in values:  # a missing or empty value: no score, no call
                    value = s.get(name)
                    row[name] = None if value is None or pd.isna(value) else \
                        value if name == "class" else int(value) if name.startswith("call") else float(value)
                rows.append(row)
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({c: object for c in values}).where(frame.notna(), None)


KEY_COLUMNS = ["input", "study_key", "n_images", "error"]


def output_columns(bundle: Any) -> list[str]:
    """The pyfunc's output columns for ``bundle``: :data:`OUTPUT_COLUMNS`, then per output of a
    multi-label/multi-class bundle ``score.<name>``/``call.<name>``, then ``class`` (multi-class arg-max)."""
    per_output = [c for n in bundle.outputs for c in (f"score.{n}", f"call.{n}")]
    return OUTPUT_COLUMNS + per_output + (["class"] if bundle.task == "multiclass" else [])


def _image_scores(predictor: Any, x: Any) -> dict[str, Any]:
    """The output values of one preprocessed image (a study of one image: for a study-level bundle, a bag
    of one slice through its attention pooling)."""
    from .aggregator import is_study_level

    bundle = predictor.bundles[0]
    if is_study_level(bundle.meta):
        score, per, _ = predictor.score_studies(0, [""], [x[0]])
    else:
        score, per = predictor.score_outputs(0, x)
    out: dict[str, Any] = {"score": None, "call": None}
    if bundle.binary_call:  # a multi-class bundle without data.normal has no abnormal-vs-normal score
        out["score"] = float(bundle.study_scores(score)[0])
        out["call"] = int(out["score"] >= bundle.threshold)
    for k, (name, t) in enumerate(bundle.output_thresholds.items()):
        out[f"score.{name}"] = float(per[0, k])
        out[f"call.{name}"] = None if np.isnan(t) else int(per[0, k] >= t)
    if bundle.task == "multiclass":
        out["class"] = bundle.outputs[int(np.argmax(per[0]))]
    return out


def _no_call(row: int, error: str) -> dict[str, Any]:
    """An output row without a call: the study could not be scored, which is not a negative finding."""
    return {"input": row, "study_key": "", "n_images": 0, "score": None, "call": None, "error": error}


def signature(bundle: Any = None):
    """Input: optional ``path`` (string) and ``image`` (C×H×W array; C×D×H×W for a bundle whose model takes
    whole volumes); output: the study rows (:func:`output_columns` of ``bundle``; without one, those of a
    binary bundle)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    image: Any = Array(Array(Array("double")))
    if bundle is not None and bundle.preprocess()[0].view.kind == "volume":
        image = Array(image)
    inputs = Schema([ColSpec("string", "path", required=False), ColSpec(image, "image", required=False)])
    extra = [] if bundle is None else output_columns(bundle)[len(OUTPUT_COLUMNS):]
    outputs = Schema([ColSpec("long", "input"), ColSpec("string", "study_key"), ColSpec("long", "n_images"),
                      ColSpec("double", "score", required=False), ColSpec("long", "call", required=False),
                      ColSpec("string", "error")]
                     + [ColSpec("string" if c == "class" else "long" if c.startswith("call") else "double", c,
                                required=False) for c in extra])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    from ..provenance import library_versions

    v = library_versions()
    return [f"medlora=={v['medlora']}", f"torch=={v['torch'].split('+')[0]}", f"timm=={v['timm']}", f"peft=={v['peft']}"]


def register_bundle(bundle_dir: Path, name: str, run_id: str | None = None, tracking_uri: str | None = None,
                    alias: str = CANDIDATE_ALIAS) -> tuple[str, str]:
    """Log ``bundle_dir`` as a pyfunc (in run ``run_id`` when given), register it as ``name``, set ``alias``.

    Returns ``(model_uri, version)`` where ``model_uri`` is ``models:/NAME@ALIAS``.
    """
    import mlflow
    from mlflow import MlflowClient

    bundle_dir = Path(bundle_dir)
    require_verified(bundle_dir)
    bundle = open_bundle(bundle_dir)
    artifacts = {"bundle": str(bundle_dir)}
    base = bundle.meta["base"]
    if base["source"] in LOCAL_SOURCES and bundle.artifact.needs_base:
        path = Path(base["weights_path"])
        if not path.is_file():
            raise BundleError(f"base weights {path} of bundle {bundle_dir} are not on this machine; cannot register")
        artifacts["base_weights"] = str(path)
    previous = mlflow.get_tracking_uri()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        run_id = run_id or bundle.meta.get("mlflow_run_id")
        # resuming a run needs its experiment active, whichever experiment this process used before
        mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="medlora_model", python_model=MedloraPyfunc(), artifacts=artifacts, signature=signature(bundle),
                registered_model_name=name, pip_requirements=pip_requirements(),
                metadata={"medlora_base": {k: base[k] for k in ("timm_name", "source", "sha256", "state_sha256")},
                          "medlora_method": bundle.method, "medlora_weights": bundle.meta.get("weights")},
            )
        version = str(info.registered_model_version)
        MlflowClient().set_registered_model_alias(name, alias, version)
    finally:
        mlflow.set_tracking_uri(previous)
    log.info("registered %s version %s as @%s", name, version, alias)
    return f"models:/{name}@{alias}", version
