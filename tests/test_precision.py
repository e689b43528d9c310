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


@pytest.fixture
def bf16_speed(monkeypatch):
    """Stand in for the one-off bf16 measurement: ``set(x)`` makes bf16 measure ``x`` times fp32; the calls are counted."""
    calls = []

    def set_speed(speedup: float) -> list:
        def measured():
            calls.append(speedup)
            return {"fp32_s": 1.0, "bf16_s": 1.0 / speedup, "speedup": speedup, "cpu": "Some CPU"}
        monkeypatch.setattr(dev, "cpu_bf16_speed", measured)
        return calls

    return set_speed


@pytest.mark.parametrize("extra, native", [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                           ("avx512_vnni", False)])
def test_auto_is_bf16_on_cpus_reporting_avx512_bf16_or_amx_where_it_measured_faster(cpuinfo, bf16_speed, extra, native):
    cpuinfo(extra)
    calls = bf16_speed(1.6)
    assert "avx512f" in cpu_flags() and cpu_has_bf16() is native
    assert training_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert precision_name(training_dtype(CPU, "auto")) == ("bf16" if native else "fp32")
    assert bool(calls) is native  # a CPU without the flags is never measured


def test_auto_stays_fp32_on_a_bf16_cpu_where_bf16_measured_slower(cpuinfo, bf16_speed, caplog):
    """An Intel Xeon with AVX512-BF16 but no AMX ran bf16 at 0.57x fp32: auto must not pick it there."""
    cpuinfo("avx512_bf16")
    bf16_speed(0.57)
    with caplog.at_level(logging.INFO, logger="medlora.device"):
        assert training_dtype(CPU, "auto") is None
    assert "0.57x fp32" in caplog.text and "training in fp32" in caplog.text
    bf16_speed(dev.BF16_MIN_SPEEDUP)
    assert training_dtype(CPU, "auto") == torch.bfloat16
    assert training_dtype(CPU, "bf16") == torch.bfloat16  # asked for: honoured whatever the measurement


def test_the_bf16_measurement_is_taken_once_per_machine_and_kept_in_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDLORA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dev, "_measured", {})
    runs = []

    def measure():
        runs.append(1)
        return {"fp32_s": 2.0, "bf16_s": 1.0, "speedup": 2.0}

    monkeypatch.setattr(dev, "measure_cpu_bf16", measure)
    first = dev.cpu_bf16_speed()
    assert first["speedup"] == 2.0 and len(runs) == 1 and (tmp_path / "cpu-bf16.json").is_file()
    monkeypatch.setattr(dev, "_measured", {})  # a new process: read back, not measured again
    assert dev.cpu_bf16_speed()["speedup"] == 2.0 and len(runs) == 1
    (tmp_path / "cpu-bf16.json").write_text("not json")  # a damaged file is measured again and rewritten
    monkeypatch.setattr(dev, "_measured", {})
    assert dev.cpu_bf16_speed()["speedup"] == 2.0 and len(runs) == 2
    assert "speedup" in (tmp_path / "cpu-bf16.json").read_text()


def test_the_bf16_probe_times_both_precisions_and_leaves_the_random_state_alone():
    """The probe can run inside a seeded training run (its first call on a machine): it must not draw from
    torch's global generator, or that first run would train differently from every later one."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    speed = dev.measure_cpu_bf16(repeats=1)
    assert torch.equal(torch.rand(3), expected)
    assert speed["fp32_s"] > 0 and speed["bf16_s"] > 0
    assert speed["speedup"] == pytest.approx(speed["fp32_s"] / speed["bf16_s"])


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
