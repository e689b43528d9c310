"""``train.precision``: which autocast dtype training steps use, from the device and the CPU's flags."""

from __future__ import annotations

import logging

import pytest
import torch

import medlora.device as dev
from medlora.device import cpu_flags, cpu_has_bf16, precision_name, training_dtype
from medlora.errors import ConfigError

CPU = torch.device("cpu")
CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\nprocessor\t: 1\n"


@pytest.fixture
def cpuinfo(monkeypatch, tmp_path):
    """Point the flag reader at a fake /proc/cpuinfo with the given extra flags."""

    def use(extra: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(extra=extra))
        real = dev.Path
        monkeypatch.setattr(dev, "Path", lambda p: real(path) if str(p) == "/proc/cpuinfo" else real(p))

    return use


@pytest.mark.parametrize("extra, native", [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                           ("avx512_vnni", False)])
def test_auto_is_bf16_exactly_on_cpus_reporting_avx512_bf16_or_amx(cpuinfo, extra, native):
    cpuinfo(extra)
    assert "avx512f" in cpu_flags() and cpu_has_bf16() is native
    assert training_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert precision_name(training_dtype(CPU, "auto")) == ("bf16" if native else "fp32")


def test_fp32_never_autocasts_and_bf16_is_honoured_with_a_warning_where_emulated(cpuinfo, caplog):
    cpuinfo("avx512_bf16")
    assert training_dtype(CPU, "fp32") is None
    cpuinfo("")
    with caplog.at_level(logging.WARNING, logger="medlora.device"):
        assert training_dtype(CPU, "bf16") == torch.bfloat16
    assert "emulated" in caplog.text and "avx512_bf16" in caplog.text


def test_unreadable_cpuinfo_means_no_flags(monkeypatch):
    class Missing:
        def __init__(self, *_):
            pass

        def read_text(self, *_, **__):
            raise OSError("no /proc here")

    monkeypatch.setattr(dev, "Path", Missing)
    assert cpu_flags() == frozenset() and training_dtype(CPU, "auto") is None


def test_cuda_auto_follows_the_cards_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training_dtype(torch.device("cuda"), "auto") is None


def test_an_unknown_precision_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="train.precision='fp16'; allowed: auto, fp32, bf16"):
        training_dtype(CPU, "fp16")


def test_fit_logs_the_resolved_precision_and_validates_in_fp32(tmp_path):
    """A tiny fit records the precision it trained in (fp32 here: this CPU path without bf16 flags)."""
    from medlora.config import TrainConfig
    from medlora.train.loop import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    batches = [{"image": torch.randn(8, 4), "label": torch.tensor([0, 1] * 4), "sample_id": [f"s{i}" for i in range(8)],
                "study_key": [f"st{i}" for i in range(8)], "patient_key": [f"p{i}" for i in range(8)]}]
    result = fit(model, batches, batches, TrainConfig(epochs=1, precision="fp32", head_norm=False), CPU, 1,
                 val_metric=lambda p: 0.5)
    assert result.precision == "fp32"
