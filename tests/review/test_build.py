"""``medlora export`` / ``medlora verify``: layout, manifest, reload with plain peft, PHI, atomicity, report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXPECTED = {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "base/base.safetensors",
            "medlora.json", "model_card.md", "metrics.json", "predictions.csv", "predictions_samples.csv",
            "plots/roc.png", "plots/pr.png", "plots/reliability.png", "plots/score_histograms.png", "report.html",
            "MANIFEST.sha256"}


def test_bundle_layout_metadata_and_verify(bundle_dir, finished_run, capsys, run_id_of):
    from medlora.cli import main
    from medlora.hashing import sha256_file

    out, cfg, _ = finished_run
    files = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert EXPECTED <= files
    assert any(f.startswith("saliency/tp_") for f in files), "a true-positive saliency example is expected"
    meta = json.loads((bundle_dir / "medlora.json").read_text())
    assert meta["mlflow_run_id"] == run_id_of(out) and meta["export"]["mlflow_run_id"] == run_id_of(out)
    assert meta["base"]["weights_path"] == "base/base.safetensors" and meta["base"]["in_bundle"] is True
    assert sha256_file(bundle_dir / "base/base.safetensors") == meta["base"]["sha256"]
    assert {"medlora", "torch", "timm", "peft"} <= set(meta["export"]["versions"])
    assert meta["dataset"]["fingerprint"] and meta["labels"]["abnormal"] == "abnormal"
    studies = pd.read_csv(bundle_dir / "predictions.csv")
    assert list(studies.columns) == ["split", "study_key", "patient_key", "label", "score", "call"]
    assert studies.groupby(["split", "study_key"]).size().max() == 1
    assert (studies["call"] == (studies["score"] >= meta["operating_point"]["threshold"])).all()
    card = (bundle_dir / "model_card.md").read_text()
    for section in ("Model details", "Intended use", "Out-of-scope", "Factors", "Metrics", "Evaluation data",
                    "Training data", "Quantitative analyses", "Ethical considerations", "Caveats and recommendations"):
        assert f"## {section}" in card or f"### {section}" in card, section
    assert "not a cleared or approved medical device" in card
    assert main(["verify", str(bundle_dir)]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["flip_byte", "delete", "add"])
def test_verify_names_the_tampered_file(bundle_copy, change, capsys):
    from medlora.cli import main

    target = bundle_copy / "adapter" / "adapter_model.safetensors"
    if change == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        expected = "changed: adapter/adapter_model.safetensors"
    elif change == "delete":
        target.unlink()
        expected = "missing: adapter/adapter_model.safetensors"
    else:
        (bundle_copy / "notes.txt").write_text("added later")
        expected = "extra: notes.txt"
    assert main(["verify", str(bundle_copy)]) == 1
    assert expected in capsys.readouterr().out


def test_plain_peft_reload_reproduces_bundle_predictions(bundle_dir, test_split, finished_run):
    """Only timm + peft + safetensors + the bundle: the per-image test scores come back."""
    import timm
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from medlora.transforms.pipeline import build_transforms

    _, cfg, _ = finished_run
    meta = json.loads((bundle_dir / "medlora.json").read_text())
    b = meta["base"]
    base = timm.create_model(b["timm_name"], pretrained=False, num_classes=b["num_classes"], **b["timm_kwargs"])
    base.load_state_dict(load_file(bundle_dir / b["weights_path"]), strict=False)
    model = PeftModel.from_pretrained(base, str(bundle_dir / "adapter")).eval()
    pre = meta["preprocess"]
    transform = build_transforms(cfg.preprocess, pre["image_size"], pre["mean"], pre["std"])
    x = torch.stack([transform({"image": str(f)})["image"] for f in test_split["file"]])
    with torch.no_grad():
        scores = torch.softmax(model(x), 1)[:, meta["labels"]["abnormal_index"]].numpy()
    expected = pd.read_csv(bundle_dir / "predictions_samples.csv").query("split == 'test'").set_index("sample_id")
    np.testing.assert_allclose(scores, expected.loc[test_split["sample_id"], "score"].to_numpy(), atol=1e-5)


def test_phi_scanner_finds_planted_patient_name_but_nothing_in_a_real_export(bundle_dir, bundle_copy, phantom_root):
    import pydicom

    from medlora.errors import BundleError
    from medlora.review.phi import known_identifiers, require_no_phi, scan_bundle

    known = known_identifiers([phantom_root])
    assert scan_bundle(bundle_dir, known) == []
    name = str(pydicom.dcmread(next(phantom_root.rglob("*.dcm")), stop_before_pixels=True).PatientName)
    with (bundle_copy / "predictions.csv").open("a") as f:
        f.write(f"test,{name},x,0,0.1,0\n")
    kinds = {(f.file, f.kind) for f in scan_bundle(bundle_copy, known)}
    assert ("predictions.csv", "patient name from the source DICOM headers") in kinds
    assert ("predictions.csv", "DICOM person name (Family^Given)") in kinds  # found without the headers too
    with pytest.raises(BundleError, match="predictions.csv: patient name") as err:
        require_no_phi(bundle_copy, known)
    assert name not in str(err.value)


@pytest.mark.parametrize("text, kind", [("study 1.2.826.0.1.3680043.8.498.12345", "DICOM-style UID"),
                                        ("date of birth: 19620314", "DICOM date next to a birth/study date word")])
def test_phi_patterns(text, kind):
    from medlora.review.phi import scan_text

    assert [f.kind for f in scan_text(text, "x.md", set())] == [kind]
    assert scan_text("transfer syntax 1.2.840.10008.1.2.1, torch 2.14.1, auroc 0.912", "x.md",
                     {"1.2.840.10008.1.2.1"}) == []


def _no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_export_refuses_a_leak_and_leaves_no_bundle(finished_run, phantom_root, tmp_path, monkeypatch, run_id_of):
    import pydicom

    from medlora.errors import BundleError
    from medlora.review import build as bundle_mod

    out, cfg, _ = finished_run
    name = str(pydicom.dcmread(next(phantom_root.rglob("*.dcm")), stop_before_pixels=True).PatientName)
    card = bundle_mod.model_card
    monkeypatch.setattr(bundle_mod, "model_card", lambda *a: card(*a) + f"\nReviewed case of {name}\n")
    monkeypatch.setattr(bundle_mod, "_saliency", lambda *a: ([], "skipped in this test"))
    target = tmp_path / "leaky"
    with pytest.raises(BundleError, match="model_card.md: patient name") as err:
        bundle_mod.export_bundle(run_id_of(out), target, tracking_uri=cfg.tracking.uri)
    assert name not in str(err.value)
    assert not target.exists() and _no_leftovers(tmp_path) == []


def test_failed_export_leaves_no_folder_and_keeps_a_previous_one(finished_run, bundle_dir, tmp_path, monkeypatch,
                                                                  run_id_of):
    from medlora.errors import BundleError
    from medlora.review import build as bundle_mod

    out, cfg, _ = finished_run

    def boom(*args, **kwargs):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(bundle_mod, "write_plots", boom)
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="injected"):
        bundle_mod.export_bundle(run_id_of(out), target, tracking_uri=cfg.tracking.uri)
    assert not target.exists() and _no_leftovers(tmp_path) == []

    previous = Path(shutil.copytree(bundle_dir, tmp_path / "previous"))
    with pytest.raises(BundleError, match="already exists"):
        bundle_mod.export_bundle(run_id_of(out), previous, tracking_uri=cfg.tracking.uri)
    with pytest.raises(RuntimeError, match="injected"):
        bundle_mod.export_bundle(run_id_of(out), previous, tracking_uri=cfg.tracking.uri, overwrite=True)
    from medlora.bundle.manifest import verify_bundle

    assert verify_bundle(previous).ok and _no_leftovers(tmp_path) == []


def test_report_is_self_contained_and_renders_in_headless_chromium(bundle_dir, tmp_path):
    html = (bundle_dir / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 5
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("/usr/bin/chromium is not installed (Debian package 'chromium')")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,2000",
         (bundle_dir / "report.html").as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    console = [line for line in proc.stderr.splitlines()
               if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]
    assert console == [], console
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]


def test_export_cli_reports_an_unknown_run(finished_run, tmp_path, capsys):
    from medlora.cli import main

    _, cfg, _ = finished_run
    assert main(["export", "0" * 32, "--out", str(tmp_path / "b"), "--tracking-uri", cfg.tracking.uri]) == 2
    assert "cannot be read" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_data_card_comes_from_the_run_artifact_else_the_config(tmp_path):
    from medlora.review.build import _data_card

    card = tmp_path / "card.md"
    card.write_text("# config card")
    assert _data_card(tmp_path, {"data": {"card": str(card)}}) == "# config card"
    (tmp_path / "data_card.md").write_text("# logged card")
    assert _data_card(tmp_path, {"data": {"card": str(card)}}) == "# logged card"
    assert _data_card(tmp_path / "nothing", {}) is None


def test_the_model_card_names_the_modalities_and_says_unknown_out_loud(finished_run) -> None:
    from medlora.review.card import modality_line

    out, _, _ = finished_run
    meta = json.loads((out / "medlora.json").read_text())
    found = meta["dataset"]["modalities"]
    assert set(found) == {"CT"} and sum(found.values()) > 0  # the phantoms are CT
    assert f"CT ({found['CT']})" in (out / "bundle" / "model_card.md").read_text()
    line = modality_line({"modalities": {"unknown": 4}})
    assert "unknown (4)" in line and "data.modality" in line


def test_the_site_secret_reaches_neither_mlflow_nor_the_run_folder(finished_run, tmp_path) -> None:
    import os

    from mlflow import MlflowClient

    out, cfg, _ = finished_run
    secret = open(os.environ["MEDLORA_SECRET_FILE"]).read().strip()
    client = MlflowClient(cfg.tracking.uri)
    run = client.search_runs([client.get_experiment_by_name("phantoms").experiment_id])[0]
    assert run.data.tags["medlora.key_scheme"].startswith("hmac-sha256:")
    assert not any(secret in str(v) for v in (*run.data.params.values(), *run.data.tags.values()))
    logged = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    files = [p for p in (*logged.rglob("*"), *out.rglob("*")) if p.is_file()]
    assert files and not [p for p in files if secret.encode() in p.read_bytes()]
    db = Path(cfg.tracking.uri.removeprefix("sqlite:///"))
    assert secret.encode() not in db.read_bytes()
