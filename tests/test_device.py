"""Runtime setup: thread counts and the torch.compile switch with its logged fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from medlora.device import available_cpus, configure_threads, maybe_compile
from medlora.errors import ConfigError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_configure_threads_uses_the_configured_count_else_the_available_cpus(restore_threads):
    assert configure_threads(1) == 1 == torch.get_num_threads()
    assert configure_threads(None) == available_cpus()


@pytest.mark.parametrize("threads", [0, -2])
def test_configure_threads_rejects_non_positive_counts(threads):
    with pytest.raises(ConfigError, match="train.threads"):
        configure_threads(threads)


def test_maybe_compile_disabled_returns_the_model_itself():
    model = nn.Linear(3, 2)
    assert maybe_compile(model, False) is model


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def broken_compile(model, *args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = nn.Linear(3, 2)
    step = maybe_compile(model, True)
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger="medlora.device"):
        out = step(x)
        again = step(x)
    assert torch.equal(out, model(x)) and torch.equal(again, out)
    assert sum("torch.compile failed" in r.message for r in caplog.records) == 1  # logged once
    assert step.training == model.training  # attributes reach the module


def test_model_errors_are_not_hidden_by_the_fallback(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: model)
    step = maybe_compile(nn.Linear(3, 2), True)
    with pytest.raises(RuntimeError):
        step(torch.randn(4, 5))  # wrong input width: the eager retry raises it again
