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
