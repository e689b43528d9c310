"""The names of the MLflow tags medlora writes and searches; one place, so writers and readers agree.

``medlora.role`` tells a sweep parent (``sweep``) from its children (``child``), single runs
(``run``) and pretraining runs (``pretrain``); a sweep is found again by ``medlora.sweep_hash``, a
child by ``medlora.config_hash`` (the hash of its resolved config); ``medlora.host``/``medlora.pid`` name the process running it.
"""

from __future__ import annotations

ROLE = "medlora.role"
SWEEP_HASH = "medlora.sweep_hash"
POINT_HASH = "medlora.config_hash"
SUPPORT_HASH = "medlora.support_hash"
HOST = "medlora.host"
PID = "medlora.pid"
METHOD = "medlora.method"
PIPELINE = "medlora.pipeline"
VERSION = "medlora.version"
GIT_COMMIT = "medlora.git_commit"
DATASET = "medlora.dataset"
DATASET_FINGERPRINT = "medlora.dataset_fingerprint"
DATA_CARD_NAME = "medlora.data_card.name"
DATA_CARD_VERSION = "medlora.data_card.version"
KEY_SCHEME = "medlora.key_scheme"
PRETRAIN_KEY = "medlora.pretrain_key"  # a pretraining run: data fingerprint + settings (medlora.experiment.pretrain)
FAILURE_REASON = "medlora.failure_reason"  # why a run ended FAILED, set by the stage that failed
# MLflow's own experiment tag: its UI opens a "custom model development" experiment on the runs table
# (params and metrics) instead of the GenAI traces overview
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
CLAIM = "medlora.claim"  # the id a sweep driver gave one point's task (equal on every retry of that task)
WORKER_HOST = "medlora.worker_host"  # the Ray worker that trains a child (medlora.host/pid: its driver)
WORKER_PID = "medlora.worker_pid"
DUPLICATE_OF = "medlora.duplicate_of"  # a child that finished after another child of the same point
PRECISION = "medlora.precision"  # what train.precision resolved to for the training steps: fp32 or bf16
TOGETHER = "medlora.trained_together"  # a sweep child trained among this many LoRA points (medlora.train.together)
# a validation of a received bundle on a site's studies (medlora.experiment.validate)
BUNDLE_SHA256 = "medlora.bundle.sha256"  # sha256 of the validated bundle's MANIFEST.sha256
BUNDLE_RUN = "medlora.bundle.run_id"  # the MLflow run that trained the bundle's model
BUNDLE_MODEL_VERSION = "medlora.bundle.model_version"  # name/version when the bundle is a registered model
VALIDATION = "medlora.validation"  # on a registered model version: its validation runs, comma-separated
