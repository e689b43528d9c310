"""Each plot writes a non-empty PNG, marks the operating point, and needs no display."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medlora.errors import MetricUndefinedError
from medlora.evaluate import plots
from medlora.evaluate.operating_point import OperatingPoint

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 120)
P = 1 / (1 + np.exp(-(RNG.normal(size=120) + 1.5 * Y - 0.75)))
OP = OperatingPoint("youden", 0.5, 0.8, 0.8)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (plots.plot_roc, {"operating_point": OP, "n_bootstrap": 30}),
        (plots.plot_roc, {"n_bootstrap": 0}),
        (plots.plot_pr, {"operating_point": OP}),
        (plots.plot_reliability, {}),
        (plots.plot_score_histograms, {"operating_point": OP}),
    ],
)
def test_plot_writes_png(tmp_path: Path, fn, kwargs: dict) -> None:
    out = fn(Y, P, tmp_path / "sub" / "figure.png", **kwargs)
    assert out == tmp_path / "sub" / "figure.png"
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5_000


def test_importing_evaluate_loads_neither_matplotlib_nor_torch() -> None:
    code = (
        "import sys, medlora.evaluate.report, medlora.evaluate.plots; "
        "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_roc_needs_both_classes(tmp_path: Path) -> None:
    with pytest.raises(MetricUndefinedError, match="ROC curve"):
        plots.plot_roc(np.zeros(5, int), np.linspace(0, 1, 5), tmp_path / "roc.png")
