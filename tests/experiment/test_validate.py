"""``medlora validate``: a received bundle judged on a second site's phantoms, at its shipped operating point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import site_config


@pytest.fixture(scope="session")
def validated(finished_run, bundle_dir, site_b, tmp_path_factory):
    from medlora.cli import main

    tmp = tmp_path_factory.mktemp("validate")
    cfg_file = site_config(finished_run, site_b, tmp)
    out = tmp / "out"
    assert main(["validate", str(bundle_dir), str(cfg_file), "--out", str(out)]) == 0
    return out, cfg_file, tmp


def test_validation_writes_a_report_and_a_run_with_a_training_runs_names(validated, bundle_dir, finished_run):
    from mlflow import MlflowClient

    from medlora.bundle.adjust import bundle_sha256

    out, _, _ = validated
    doc = json.loads((out / "metrics.json").read_text())
    shipped = json.loads((bundle_dir / "medlora.json").read_text())["operating_point"]["threshold"]
    assert doc["operating_point"]["threshold"] == shipped  # frozen, never re-tuned
    assert doc["counts"]["n"] == 40 and doc["bundle"]["sha256"] == bundle_sha256(bundle_dir)
    assert [c["metric"] for c in doc["comparisons"]][:3] == ["auroc", "sensitivity", "specificity"]
    assert doc["familiarity"]["available"] and 0 <= doc["familiarity"]["flagged_fraction"] <= 1
    assert doc["calibration_fit"]["slope"] is not None and doc["score_shift"]["ks_p"] is not None
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 40 and set(preds.columns) >= {"study_key", "score", "call", "familiarity", "unfamiliar"}
    assert not preds["study_key"].str.contains("1.2.826").any()  # pseudonymous keys only
    page = (out / "validation.html").read_text()
    assert "Internal vs external" in page and "familiarity" in page.lower() and "<script" not in page
    client = MlflowClient(finished_run[1].tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("site_b").experiment_id],
                              "tags.`medlora.role` = 'validation'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["medlora.bundle.sha256"] == bundle_sha256(bundle_dir)
    assert run.data.tags["medlora.bundle.run_id"] == json.loads((bundle_dir / "medlora.json").read_text())["mlflow_run_id"]
    assert run.data.params["method"] == "lora" and run.data.params["backbone"] == "vit_tiny_patch16_224"
    assert run.data.metrics["threshold"] == pytest.approx(shipped)
    assert {"test_auroc", "test_sensitivity", "test_specificity", "test_calibration_slope"} <= set(run.data.metrics)


def test_shuffled_site_labels_leave_the_operating_point_bit_identical(validated, bundle_dir, site_b, finished_run,
                                                                    tmp_path):
    """The evaluated studies never influence the threshold: shuffle their labels, it stays the same."""
    from medlora.cli import main

    out, _, _ = validated
    root = Path(shutil.copytree(site_b, tmp_path / "shuffled"))
    labels = pd.read_csv(root / "labels.csv")
    labels["label"] = labels["label"].sample(frac=1.0, random_state=3).to_numpy()
    labels.to_csv(root / "labels.csv", index=False)
    cfg_file = site_config(finished_run, root, tmp_path)
    assert main(["validate", str(bundle_dir), str(cfg_file), "--out", str(tmp_path / "out")]) == 0
    a, b = (json.loads((o / "metrics.json").read_text()) for o in (out, tmp_path / "out"))
    assert a["operating_point"] == b["operating_point"]
    assert a["operating_point"]["threshold"].hex() == b["operating_point"]["threshold"].hex()


def test_calibrate_on_refits_on_a_subset_and_writes_a_child_bundle(validated, bundle_dir, site_b, finished_run,
                                                                   tmp_path):
    from medlora.bundle.adjust import bundle_sha256
    from medlora.cli import main

    cfg_file = site_config(finished_run, site_b, tmp_path)
    out = tmp_path / "out"
    assert main(["validate", str(bundle_dir), str(cfg_file), "--out", str(out), "--calibrate-on", "0.5"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    adj = doc["site_adjustment"]
    assert adj["n_calibration_studies"] + doc["counts"]["n"] == 40  # the calibration studies are not evaluated
    assert adj["shipped"]["counts"]["n"] == adj["adjusted"]["counts"]["n"] == doc["counts"]["n"]
    meta = json.loads((out / "adjusted_bundle" / "medlora.json").read_text())
    assert meta["lineage"]["parent_sha256"] == bundle_sha256(bundle_dir) and "threshold" in meta["lineage"]["changed"]
    assert meta["operating_point"]["threshold"] == pytest.approx(adj["operating_point"]["threshold"])
    assert main(["verify", str(out / "adjusted_bundle")]) == 0
    split = pd.read_csv(out / "calibration_split.csv")
    assert split["patient_key"].nunique() == 40  # persisted, patient-level


def test_bad_input_is_refused_before_scoring(validated, bundle_copy, site_b, finished_run, tmp_path, capsys):
    from medlora.cli import main

    cfg_file = site_config(finished_run, site_b, tmp_path, classes=["healthy", "abnormal"])
    assert main(["validate", str(bundle_copy), str(cfg_file), "--out", str(tmp_path / "a")]) == 2
    assert "healthy" in capsys.readouterr().err
    # a bundle whose base differs: refused naming both hashes
    meta = json.loads((bundle_copy / "medlora.json").read_text())
    meta["base"]["sha256"] = "0" * 64
    (bundle_copy / "medlora.json").write_text(json.dumps(meta))
    from medlora.bundle.manifest import write_manifest

    (bundle_copy / "MANIFEST.sha256").unlink()
    write_manifest(bundle_copy)
    cfg_file = site_config(finished_run, site_b, tmp_path)
    assert main(["validate", str(bundle_copy), str(cfg_file), "--out", str(tmp_path / "b")]) == 2
    assert "0000000000" in capsys.readouterr().err
    assert not (tmp_path / "b" / "manifest.csv").exists()  # refused before any study was read


def test_a_bundle_without_feature_statistics_says_not_available(validated, bundle_copy, site_b, finished_run, tmp_path):
    from medlora.bundle.manifest import write_manifest
    from medlora.cli import main

    (bundle_copy / "feature_stats.safetensors").unlink()
    (bundle_copy / "MANIFEST.sha256").unlink()
    write_manifest(bundle_copy)
    cfg_file = site_config(finished_run, site_b, tmp_path)
    assert main(["validate", str(bundle_copy), str(cfg_file), "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert doc["familiarity"]["available"] is False
    assert "Not available" in (tmp_path / "o" / "validation.html").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is not installed (Debian 'chromium')")
def test_validation_page_renders_in_chromium(validated, tmp_path):
    """validation.html as a reviewer sees it (``MEDLORA_SCREENSHOTS=DIR`` keeps the PNG)."""
    import os
    import subprocess

    import numpy as np
    from matplotlib.image import imread

    out, _, _ = validated
    keep = Path(os.environ.get("MEDLORA_SCREENSHOTS") or tmp_path)
    keep.mkdir(parents=True, exist_ok=True)
    shot = keep / "validation.png"
    args = ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}",
            "--window-size=1200,2600"]
    subprocess.run([*args, f"--screenshot={shot}", (out / "validation.html").as_uri()], capture_output=True, timeout=300)
    dom = subprocess.run([*args, "--dump-dom", (out / "validation.html").as_uri()], capture_output=True, text=True,
                         timeout=300).stdout
    assert shot.is_file() and float(np.asarray(imread(shot))[..., :3].std()) > 0.05
    for heading in ("Internal vs external", "Site performance at the shipped operating point", "Where it does not hold",
                    "Studies unlike the training studies"):
        assert heading in dom
