"""``pretrain.ema``: the pretraining loop keeps a moving average of the encoder, checkpointed with the rest."""

from __future__ import annotations

import timm
import torch

from medlora.config import PretrainConfig
from medlora.models.mae import MaskedAutoencoder
from medlora.train.pretrain import pretrain_fit

TINY = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"}


def _mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)
    return MaskedAutoencoder(encoder, 32, mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)


def _loader() -> torch.utils.data.DataLoader:
    images = [{"image": torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i))} for i in range(12)]
    return torch.utils.data.DataLoader(images, batch_size=4, shuffle=False)


def _fit(epochs: int, ema: float | None, checkpoint=None, on_epoch=None):
    torch.manual_seed(1)
    mae = _mae()
    cfg = PretrainConfig(epochs=epochs, batch_size=4, lr=1e-2, warmup_epochs=0, ema=ema)
    return mae, pretrain_fit(mae, _loader(), cfg, torch.device("cpu"), checkpoint=checkpoint, on_epoch=on_epoch)


class Stop(Exception):
    """The process dies during its second epoch's bookkeeping: the first epoch's checkpoint is on disk."""


def _die(entry) -> None:
    if entry.epoch == 1:
        raise Stop


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_the_average_is_kept_only_when_asked_and_trails_the_last_weights() -> None:
    mae, plain = _fit(2, None)
    assert plain.ema is None
    mae, averaged = _fit(2, 0.9)
    last, mean = _flat(mae.encoder), _flat(averaged.ema)
    assert not torch.allclose(last, mean)  # an average of 6 steps' weights, not the last one
    _, first_only = _fit(2, 1e-9)  # a decay of ~0 keeps just the latest step
    torch.testing.assert_close(_flat(first_only.ema), last)


def test_an_interrupted_pretraining_resumes_the_same_average(tmp_path) -> None:
    import pytest

    _, straight = _fit(3, 0.9)
    with pytest.raises(Stop):
        _fit(3, 0.9, checkpoint=tmp_path / "state.pt", on_epoch=_die)
    assert (tmp_path / "state.pt").is_file()
    _, resumed = _fit(3, 0.9, checkpoint=tmp_path / "state.pt")
    torch.testing.assert_close(_flat(resumed.ema), _flat(straight.ema))
