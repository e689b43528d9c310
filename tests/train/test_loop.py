"""The training loop augments training batches only, and times data apart from steps."""

import torch
from torch import nn

from medlora.config import TrainConfig
from medlora.train.loop import fit


def _batches(n: int, size: int = 8, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n):
        y = torch.tensor([0, 1, 0, 1])
        x = torch.randn(4, 3, size, size, generator=g) + y.view(-1, 1, 1, 1)
        keys = [f"b{b}-{i}" for i in range(4)]
        out.append({"image": x, "label": y, "sample_id": keys, "study_key": keys, "patient_key": keys})
    return out


class Spy:
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x.flip(-1)


def test_augment_runs_on_every_training_batch_and_never_on_validation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    train, val = _batches(3), _batches(2, seed=1)
    spy = Spy()
    cfg = TrainConfig(epochs=2, batch_size=4, warmup_epochs=0, patience=2, lr=1e-2)
    result = fit(model, train, val, cfg, torch.device("cpu"), 1, val_metric=lambda p: 0.5, augment=spy)
    assert len(spy.seen) == 2 * len(train)  # every training batch of both epochs, no validation batch
    assert all(torch.equal(s, train[i % 3]["image"]) for i, s in enumerate(spy.seen))
    assert 0 < result.data_seconds <= result.train_seconds


def test_without_augment_batches_reach_the_model_unchanged():
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    train = _batches(2)
    fit(model, train, _batches(1, seed=1), TrainConfig(epochs=1, batch_size=4, warmup_epochs=0, patience=1),
        torch.device("cpu"), 1, val_metric=lambda p: 0.5)
    assert [torch.equal(s, b["image"]) for s, b in zip(seen, train, strict=True)] == [True, True]


def _shuffled_run(epochs_before_stop: int | None, checkpoint, seed: int = 0):
    """Train a small model with a shuffling loader, dropout and augmentation (all seeded); with
    ``epochs_before_stop`` the run is interrupted (Ctrl-C) after that many epochs."""
    from collections import OrderedDict

    from torch.utils.data import DataLoader

    from medlora.transforms.augment import BatchAugment

    torch.manual_seed(seed)  # a layer named "head": train.head_norm standardises its input and resumes with it
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), drop=nn.Dropout(0.3), head=nn.Linear(3 * 8 * 8, 2)))
    items = [{"image": b["image"][i], "label": b["label"][i]} for b in _batches(4) for i in range(4)]
    loader = DataLoader(items, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = _batches(2, seed=1)
    cfg = TrainConfig(epochs=4, batch_size=4, warmup_epochs=1, patience=4, lr=1e-2)
    epochs = []

    def on_epoch(e):
        epochs.append(e.epoch)
        if epochs_before_stop is not None and len(epochs) == epochs_before_stop:
            raise KeyboardInterrupt

    try:
        result = fit(model, loader, val, cfg, torch.device("cpu"), 1, val_metric=lambda p: float(p.score.mean()),
                     on_epoch=on_epoch, augment=BatchAugment(seed=seed), checkpoint=checkpoint)
    except KeyboardInterrupt:
        return None, model, epochs
    return result, model, epochs


def test_an_interrupted_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    whole, whole_model, _ = _shuffled_run(None, None)
    ckpt = tmp_path / "checkpoint.pt"
    assert _shuffled_run(2, ckpt)[0] is None and ckpt.is_file()
    resumed, resumed_model, epochs = _shuffled_run(None, ckpt)  # a new process would build the model afresh
    # the interrupt came while epoch 2 was being logged, before its checkpoint: epochs 2-4 run again
    assert epochs == [1, 2, 3]
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for a, b in zip(whole_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_each_epoch_logs_its_time_and_an_eta(caplog):
    import logging

    from medlora.train.loop import EpochLog, duration, eta_text

    assert [duration(s) for s in (42.4, 185, 3720)] == ["42 s", "3 min 05 s", "1 h 02 min"]
    history = [EpochLog(0, 0.5, 0.5, 0.5, 1e-3, 10.0), EpochLog(1, 0.4, 0.6, 0.4, 1e-3, 20.0)]
    assert eta_text(history, 3) == "ETA 45 s for 3 more epochs at most"  # mean 15 s x 3
    assert eta_text(history, 0) == "last epoch"
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with caplog.at_level(logging.INFO, logger="medlora.train.loop"):
        fit(model, _batches(2), _batches(1, seed=1), TrainConfig(epochs=3, batch_size=4, warmup_epochs=0, patience=5),
            torch.device("cpu"), 1, val_metric=lambda p: 0.5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3
    assert "ETA" in lines[0] and "2 more epochs" in lines[0] and "1 more epoch at most" in lines[1]
    assert lines[2].endswith("s; last epoch)")
