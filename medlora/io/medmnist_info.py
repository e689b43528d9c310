"""What each MedMNIST dataset is: dimensionality, task, label names, modality (the 12 2D and 6 3D sets).

Task and label names come from the installed ``medmnist`` package's ``INFO`` when it is there
(:func:`dataset_info`), else from :data:`TABLE`, a copy of MedMNIST v2/v3's ``INFO`` (task, label
names in label-index order, channels). The imaging modality and body part (DICOM ``Modality`` /
``BodyPartExamined`` of the converted files) are medlora's: MedMNIST states them only in prose.
Label names are made safe for class names and CSV column names (lower case, ``_`` for spaces and
punctuation), so ``data.classes`` / ``data.findings`` can list them as they appear in ``labels.csv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Task = Literal["binary", "multiclass", "multilabel"]


@dataclass(frozen=True)
class MedmnistInfo:
    name: str
    dims: Literal[2, 3]
    task: Task
    ordinal: bool
    labels: tuple[str, ...]  # label-index order
    channels: int
    modality: str  # DICOM Modality of the converted 2D files
    body_part: str


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen")
# name: (dims, MedMNIST task, label names, channels, modality, body part)
TABLE: dict[str, tuple[int, str, tuple[str, ...], int, str, str]] = {
    "pathmnist": (2, "multi-class", ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                                     "normal colon mucosa", "cancer-associated stroma",
                                     "colorectal adenocarcinoma epithelium"), 3, "SM", "COLON"),
    "chestmnist": (2, "multi-label, binary-class", ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass",
                                                    "nodule", "pneumonia", "pneumothorax", "consolidation", "edema",
                                                    "emphysema", "fibrosis", "pleural", "hernia"), 1, "DX", "CHEST"),
    "dermamnist": (2, "multi-class", ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                                      "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                                      "vascular lesions"), 3, "XC", "SKIN"),
    "octmnist": (2, "multi-class", ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), 1,
                 "OPT", "EYE"),
    "pneumoniamnist": (2, "binary-class", ("normal", "pneumonia"), 1, "DX", "CHEST"),
    "retinamnist": (2, "ordinal-regression", ("0", "1", "2", "3", "4"), 3, "OP", "EYE"),
    "breastmnist": (2, "binary-class", ("malignant", "normal, benign"), 1, "US", "BREAST"),
    "bloodmnist": (2, "multi-class", ("basophil", "eosinophil", "erythroblast", "immature granulocytes",
                                      "lymphocyte", "monocyte", "neutrophil", "platelet"), 3, "SM", "BLOOD"),
    "tissuemnist": (2, "multi-class", ("collecting duct, connecting tubule", "distal convoluted tubule",
                                       "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                                       "podocytes", "proximal tubule segments", "thick ascending limb"), 1, "SM",
                    "KIDNEY"),
    "organamnist": (2, "multi-class", _ORGANS, 1, "CT", "ABDOMEN"),
    "organcmnist": (2, "multi-class", _ORGANS, 1, "CT", "ABDOMEN"),
    "organsmnist": (2, "multi-class", _ORGANS, 1, "CT", "ABDOMEN"),
    "organmnist3d": (3, "multi-class", _ORGANS, 1, "CT", "ABDOMEN"),
    "nodulemnist3d": (3, "binary-class", ("benign", "malignant"), 1, "CT", "CHEST"),
    "adrenalmnist3d": (3, "binary-class", ("normal", "hyperplasia"), 1, "CT", "ABDOMEN"),
    "fracturemnist3d": (3, "multi-class", ("buckle rib fracture", "nondisplaced rib fracture",
                                           "displaced rib fracture"), 1, "CT", "CHEST"),
    "vesselmnist3d": (3, "binary-class", ("vessel", "aneurysm"), 1, "MR", "HEAD"),
    "synapsemnist3d": (3, "binary-class", ("inhibitory synapse", "excitatory synapse"), 1, "OT", "BRAIN"),
}


def safe_label(name: str) -> str:
    """``"normal, benign"`` → ``"normal_benign"``: usable as a class name and a CSV column."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _task(medmnist_task: str) -> tuple[Task, bool]:
    if medmnist_task.startswith("multi-label"):
        return "multilabel", False
    if medmnist_task == "binary-class":
        return "binary", False
    return "multiclass", medmnist_task == "ordinal-regression"


def dataset_info(name: str) -> MedmnistInfo:
    """The dataset's entry; task and labels from the ``medmnist`` package's ``INFO`` when installed."""
    if name not in TABLE:
        from ..errors import ConfigError

        raise ConfigError(f"MedMNIST set {name!r} is not known; available: {', '.join(sorted(TABLE))}")
    dims, task, labels, channels, modality, body = TABLE[name]
    try:
        import medmnist

        info = getattr(medmnist, "INFO", {}).get(name)
    except ImportError:
        info = None
    if info is not None:
        task = str(info.get("task", task))
        given = info.get("label", {})
        labels = tuple(str(given[k]) for k in sorted(given, key=int)) or labels
        channels = int(info.get("n_channels", channels))
    kind, ordinal = _task(task)
    return MedmnistInfo(name, dims, kind, ordinal, tuple(safe_label(x) for x in labels), channels, modality, body)  # type: ignore[arg-type]
