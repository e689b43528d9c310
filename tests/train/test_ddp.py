"""One run on two torchrun processes (gloo, CPU) equals the single-process run with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from medlora.config import config_to_dict


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {},  # LoRA on every block, trained on images
    {"model.method": "linear_probe"},
    {"model.lora.blocks": "[-1]"},  # LoRA on the last block over cached frozen-prefix tokens
    # each rank augments and drops out its images as the single process does
    {"preprocess.augment": "true", "model.lora.dropout": 0.1},
], ids=["lora", "linear_probe", "frozen_prefix", "lora_augment_dropout"])
def test_ddp_two_gloo_processes_match_one_process(phantom_root, tmp_path, tiny_cfg, overrides):
    # the same batches and, where set, the same per-image augmentation and dropout masks
    cfg = tiny_cfg(phantom_root, tmp_path, **{"train.epochs": 3, "train.batch_size": 8, "model.lora.dropout": 0.0,
                                                 "preprocess.augment": "false", **overrides})
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = _run([sys.executable, "-m", "medlora", "run", str(cfg_file), "--out", str(tmp_path / "one"),
                   "--set", f"tracking.uri=sqlite:///{tmp_path / 'one.db'}"], tmp_path, env)
    assert single.returncode == 0, single.stderr[-3000:]
    # an explicit loopback address and free port: with --master-port 0 the rendezvous can hang on some hosts
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(_free_port()),
                "-m", "medlora", "run", str(cfg_file), "--out", str(tmp_path / "two"),
                "--set", f"tracking.uri=sqlite:///{tmp_path / 'two.db'}"], tmp_path, env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("run ") >= 1 and ddp.stdout.count("review bundle") == 1  # rank 0 speaks once

    one, two = (pd.read_csv(tmp_path / d / "predictions.csv").sort_values("sample_id") for d in ("one", "two"))
    assert list(one.sample_id) == list(two.sample_id)  # every val/test sample scored exactly once
    np.testing.assert_allclose(two.score, one.score, atol=1e-4)
    from mlflow import MlflowClient

    def runs(db: str) -> list:
        client = MlflowClient(f"sqlite:///{tmp_path / db}")
        return client.search_runs([e.experiment_id for e in client.search_experiments()])

    (r1,), two_runs = runs("one.db"), runs("two.db")
    assert len(two_runs) == 1 and two_runs[0].info.status == "FINISHED"  # one MLflow run, by rank 0
    for name in ("val_auroc", "test_auroc", "test_sensitivity", "test_specificity", "best_epoch"):
        assert two_runs[0].data.metrics[name] == pytest.approx(r1.data.metrics[name], abs=1e-6), name
    assert two_runs[0].data.metrics["train_loss"] == pytest.approx(r1.data.metrics["train_loss"], rel=1e-4)
    assert (tmp_path / "two" / "medlora.json").is_file() and (tmp_path / "two" / "bundle" / "report.html").is_file()


def test_ddp_global_batch_that_does_not_divide_is_refused():
    from medlora.errors import ConfigError
    from medlora.train.distributed import Dist, local_batch_size

    with pytest.raises(ConfigError, match="train.batch_size=9 does not divide over 2 processes.*e.g. 10"):
        local_batch_size(9, Dist(rank=0, world=2))


@pytest.mark.parametrize(("batch", "world", "share"), [(8, 2, 4), (12, 3, 4), (5, 1, 5)])
def test_ddp_local_batch_is_the_global_batch_split_evenly(batch, world, share):
    from medlora.train.distributed import Dist, local_batch_size

    assert local_batch_size(batch, Dist(rank=world - 1, world=world)) == share


@pytest.mark.parametrize("n", [48, 50])
def test_ddp_ranks_share_the_single_process_batches_in_every_epoch(n):
    # every epoch, not only the first: the two loaders' generators must stay in step
    from medlora.config import TrainConfig
    from medlora.train.distributed import Dist
    from medlora.train.loaders import make_loader

    cfg, data = TrainConfig(batch_size=8, seed=3), [{"i": i} for i in range(n)]
    single = make_loader(data, cfg, shuffle=True)
    ranks = [make_loader(data, cfg, shuffle=True, dist=Dist(rank=r, world=2)) for r in range(2)]
    for _ in range(3):
        whole = [b["i"].tolist() for b in single]
        parts = [[b["i"].tolist() for b in loader] for loader in ranks]
        assert len(whole) == len(parts[0]) == len(parts[1]) == -(-n // 8)
        for batch, first, second in zip(whole, *parts, strict=True):
            assert first == batch[0::2] and second == batch[1::2]
        assert sorted(i for b in whole for i in b) == list(range(n))


def test_ddp_ranks_augment_their_images_as_the_single_process_does():
    import torch

    from medlora.transforms.augment import BatchAugment

    images = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = BatchAugment(seed=5)(images)
    for rank in range(2):
        part = BatchAugment(seed=5)(images[rank::2], rank=rank, world=2, total=7)
        torch.testing.assert_close(part, whole[rank::2])
    assert not torch.allclose(whole, images)
    with pytest.raises(ValueError, match="rank 0 of 2 holds 3 images of a global batch of 7; expected 4"):
        BatchAugment(seed=5)(images[:3], rank=0, world=2, total=7)


def test_ddp_ranks_draw_the_single_process_dropout_masks():
    import torch
    from torch import nn

    from medlora.models.dropout import SharedMaskDropout, batch_share, share_dropout

    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.0)))
    assert share_dropout(model) == 1 and isinstance(model[1], SharedMaskDropout)
    x, layer = torch.rand(8, 5, 6), nn.Dropout(0.3)
    torch.manual_seed(1)
    whole = layer(x)
    torch.manual_seed(1)
    assert torch.equal(model[1](x), whole)  # one process: nn.Dropout's masks
    for rank in range(2):
        torch.manual_seed(1)
        with batch_share(rank, 2, 8):
            assert torch.equal(model[1](x[rank::2]), whole[rank::2])
    assert torch.equal(model[1].eval()(x), x)
