"""An interrupted single run continues from its last epoch checkpoint, in the same MLflow run."""

from __future__ import annotations

import pytest
import yaml

from medlora.cli import main
from medlora.config import config_to_dict


@pytest.mark.slow
def test_an_interrupted_run_resumes_in_the_same_mlflow_run(phantom_root, tmp_path, tiny_cfg, monkeypatch, caplog,
                                                           capsys):
    import logging

    from mlflow import MlflowClient

    from medlora.train import checkpoint

    cfg = tiny_cfg(phantom_root, tmp_path, **{"train.epochs": 4, "data.name": "phantoms_resume"})
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "out"
    real_save, saved = checkpoint.save, []

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt  # Ctrl-C right after the second epoch's checkpoint

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert main(["run", str(cfg_file), "--out", str(out)]) == 130
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("phantoms_resume")
    (first,) = client.search_runs([exp.experiment_id])
    assert first.info.status == "KILLED" and (out / "checkpoint.pt").is_file()

    capsys.readouterr()
    assert main(["run", str(cfg_file), "--out", str(out), "--set", "train.lr=0.01"]) == 2  # another config: refused
    assert "train.lr: 0.003 in the checkpoint, 0.01 now" in capsys.readouterr().err

    monkeypatch.setattr(checkpoint, "save", real_save)
    with caplog.at_level(logging.INFO, logger="medlora.train.loop"):
        assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    assert "resuming training after epoch 2 of 4" in caplog.text
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(set(steps)) == [0, 1, 2, 3]
    assert not (out / "checkpoint.pt").exists() and (out / "bundle" / "report.html").is_file()
