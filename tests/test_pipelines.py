"""Pipelines are a plain mapping of names to functions; the config validates against the same names."""

import pytest

from medlora.errors import ConfigError


def test_the_config_names_and_the_pipelines_agree():
    from medlora.registry import PIPELINE_NAMES
    from pipelines import PIPELINES

    assert set(PIPELINES) == set(PIPELINE_NAMES)
    assert all(callable(run) for run in PIPELINES.values())


def test_an_unknown_pipeline_lists_the_valid_names():
    from pipelines import pipeline

    with pytest.raises(ConfigError, match="available: classify, fewshot, oneclass"):
        pipeline("segment")


def test_a_config_loads_without_importing_the_pipelines():
    """``medlora.config`` validates pipeline names from :mod:`medlora.registry` alone: no torch-heavy import."""
    import subprocess
    import sys

    code = "import sys, medlora.config; print('pipelines' in sys.modules, 'medlora.experiment.single' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
