"""``medlora run`` end to end on CT *volumes*: synthetic phantom series (8 slices each), half of them
kept as DICOM series and half converted to NIfTI, labels joined by folder/file path, slab views
aggregated into study scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")


def _volume_dataset(root: Path) -> Path:
    """Phantom series for 24 patients; odd patients become NIfTI files; labels keyed by path."""
    from medlora.config import SynthConfig
    from medlora.io.series import assemble_series
    from medlora.io.synth import write_phantoms

    write_phantoms(root, SynthConfig(patients=24, images_per_patient=8, size=32, abnormal_fraction=0.5, seed=1))
    studies = pd.read_csv(root / "labels.csv")
    rows = []
    for p, label in enumerate(studies["label"]):
        folder = root / f"patient{p:04d}"
        if p % 2:
            vol = assemble_series(sorted(folder.rglob("*.dcm")))
            shutil.rmtree(folder)
            nib.save(nib.Nifti1Image(vol.pixels[0], vol.affine_ras), root / f"patient{p:04d}.nii.gz")
            rows.append({"path": f"patient{p:04d}.nii.gz", "label": label})
        else:
            rows.append({"path": f"patient{p:04d}", "label": label})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.mark.slow  # ~40-70 s on 2 shared CPU cores (ingest twice, train 3 epochs)
def test_run_on_series_and_nifti_volumes_completes_with_study_level_scores(tmp_path, tiny_cfg) -> None:
    from medlora.cli import main
    from medlora.config import config_to_dict

    root = _volume_dataset(tmp_path / "volumes")
    cfg = tiny_cfg(root, tmp_path, **{
        "data.name": "phantom_volumes", "data.label_key": "path", "data.volume_min_slices": 8,
        "preprocess.view.kind": "slab", "preprocess.view.slab": 3, "preprocess.view.aggregate": "max",
        "preprocess.window": "{mode: preset, preset: lung}", "train.epochs": 3, "evaluate.bootstrap": 50,
    })
    cfg_file = tmp_path / "volumes.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "out"
    assert main(["ingest", str(cfg_file), "--out", str(out)]) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest.groupby("kind")["study_key"].nunique().to_dict() == {"nifti": 12, "series": 12}
    assert (manifest.groupby("study_key").size() == 1).all()  # one row per volume: views come after ingest
    from medlora.transforms.samples import expand_views

    samples = expand_views(manifest, cfg.preprocess)
    assert (samples.groupby("study_key").size() == 3).all() and manifest["pixel_hash"].nunique() == 24

    assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    preds = pd.read_csv(out / "predictions.csv")
    assert set(preds["split"]) == {"val", "test"}
    assert (preds.groupby("study_key").size() == 3).all()  # three slab views per study, one study score
    assert np.isfinite(preds["score"]).all() and (out / "medlora.json").is_file()
