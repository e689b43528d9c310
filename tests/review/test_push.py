"""``predict --push``'s objects, without a server: one SR (and one Secondary Capture with the saliency)
per scored study and bundle, saying the bundle's own scores and calls; nothing for an unreadable study.
(The round trip through a real PACS is tested in tests/io/dicomweb.)"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from medlora.bundle.bundle import Bundle


def _bundle(labels: dict, op: dict) -> Bundle:
    return Bundle(Path("/nowhere/chest-v3"), {"labels": labels, "operating_point": op, "method": "lora",
                                              "base": {"timm_name": "vit_tiny_patch16_224"}})


@pytest.mark.parametrize("labels, op, row, expected", [
    ({"abnormal": "nodule", "abnormal_index": 1}, {"threshold": 0.4}, {"score": 0.5},
     [("nodule", 0.5, 0.4, True)]),
    ({"task": "multilabel", "outputs": ["nodule", "effusion"], "abnormal": "any finding"},
     {"threshold": 0.5, "per_output": {"nodule": 0.3, "effusion": None}},
     {"score": 0.45, "score.nodule": 0.45, "score.effusion": 0.1},
     [("any finding", 0.45, 0.5, False), ("nodule", 0.45, 0.3, True)]),  # effusion has no threshold: no call
    ({"abnormal": "abnormal", "abnormal_index": 1}, {"threshold": 0.4}, {"score": math.nan}, []),  # unread
])
def test_findings_are_the_bundles_calls_at_its_thresholds(labels, op, row, expected):
    from medlora.review.push import findings_of

    got = findings_of(_bundle(labels, op), "", pd.Series(row))
    assert [(f.name, f.score, f.threshold, f.present) for f in got] == expected


def test_one_sr_and_one_capture_per_scored_study(bundle_dir, test_split, tmp_path):
    import highdicom as hd

    from medlora.bundle.predict import Predictor
    from medlora.review.push import algorithm_of, result_objects

    files = list(test_split["file"])[:6]
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICMgarbage")
    predictor = Predictor.from_paths([bundle_dir])
    res = predictor.predict_files([*files, broken])
    objects = result_objects(predictor, res, [*files, broken])
    scored = res.studies[res.studies["n_images"] > 0].set_index("study_key")
    srs = [o for o in objects if o.Modality == "SR"]
    captures = [o for o in objects if o.Modality == "OT"]
    assert len(srs) == len(captures) == len(scored)
    algorithm = algorithm_of(predictor.bundles[0])
    assert algorithm.name == "review" and len(algorithm.sha256) == 64
    from medlora.io.deid import pseudonym

    for sr in srs:
        key = pseudonym(str(sr.StudyInstanceUID), predictor.secret, "stu")
        (group,) = hd.sr.ComprehensiveSR.from_dataset(sr).content.get_image_measurement_groups()
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(scored.loc[key, "score"], abs=1e-6)
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if scored.loc[key, "call"] == 1 else "Absent")
    for sc in captures:
        assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.ndim == 3
