"""The command line fails early, before the ingest, and leaves nothing behind when it does."""

from __future__ import annotations

import time

from medlora.cli import main


def _config(tmp_path, **model) -> str:
    lines = ["data: {root: no_such_studies}", "model: {" + ", ".join(f"{k}: {v}" for k, v in model.items()) + "}"]
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_an_unknown_backbone_fails_before_the_ingest_and_names_close_matches(tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["run", _config(tmp_path, backbone="vit_tiny_patch16_22"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "model.backbone='vit_tiny_patch16_22' is not a timm model" in err
    assert "vit_tiny_patch16_224" in err  # the close match
    assert "no_such_studies" not in err  # failed before reading any data
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "out").exists()


def test_a_failed_run_removes_the_empty_output_folder_it_created(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", _config(tmp_path, backbone="vit_tiny_patch16_224"), "--out", str(out)]) == 2
    assert "no_such_studies" in capsys.readouterr().err  # the ingest's own error
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["run", _config(tmp_path, backbone="vit_tiny_patch16_224"), "--out", str(kept)]) == 2
    assert kept.is_dir()  # a folder that existed before is the user's: left alone
