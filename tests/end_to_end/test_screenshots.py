"""What people look at, in headless Chromium: the MLflow experiment table, a run comparison and the
review bundle's report.html, after the session's tiny run and tiny sweep.

An ``mlflow server`` on a free port of 127.0.0.1 serves the session's SQLite store and is stopped
afterwards. Each page is rendered twice: once to a PNG (kept in ``$MEDLORA_SCREENSHOTS`` when set,
to look at), once as its rendered DOM, which the assertions read. Slow: it needs the session's run
and sweep, and Chromium (Debian package ``chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian 'chromium')")]


def render(url: str, shot: Path, profile: Path, size: str = "1600,1000", budget_ms: int = 15000) -> str:
    """Screenshot ``url`` to ``shot`` and return its DOM after scripts ran (``budget_ms`` of virtual time)."""
    base = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={size}", f"--virtual-time-budget={budget_ms}"]
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=360, check=False)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=360, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000, f"{shot.name}: no screenshot ({dom.stderr[-1500:]})"
    return dom.stdout


def _not_blank(png: Path) -> float:
    """The grey-level standard deviation of a screenshot (a blank page is ~0)."""
    import numpy as np
    from matplotlib.image import imread

    return float(np.asarray(imread(png))[..., :3].std())


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    keep = os.environ.get("MEDLORA_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_mlflow_table_compare_view_and_report_render(finished_run, finished_sweep, shots, tmp_path,
                                                     mlflow_server_on):
    from mlflow import MlflowClient

    from medlora.tracking.view import table_path

    out, cfg, _ = finished_run
    sweep_cfg = finished_sweep[0]
    store = cfg.tracking.uri
    client = MlflowClient(store)
    single_exp = client.get_experiment_by_name(cfg.data.name).experiment_id
    sweep_exp = client.get_experiment_by_name(sweep_cfg.data.name).experiment_id
    (single,) = client.search_runs([single_exp], "tags.`medlora.role` = 'run'", max_results=1)
    (parent,) = client.search_runs([sweep_exp], "tags.`medlora.role` = 'sweep'")
    children = client.search_runs([sweep_exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                               "and params.shots = '1' and params.seed = '0'")
    assert len(children) == 3
    compared = [single, *children]

    url = mlflow_server_on(store).url  # stopped by the fixture after the test
    table = render(f"{url}/{table_path(sweep_exp)}", shots / "mlflow_experiment_table.png", tmp_path / "p1",
                   size="2800,1000")
    runs = urllib.parse.quote(json.dumps([r.info.run_id for r in compared]))
    exps = urllib.parse.quote(json.dumps([single_exp, sweep_exp]))
    compare = render(f"{url}/#/compare-runs?runs={runs}&experiments={exps}", shots / "mlflow_compare.png",
                     tmp_path / "p2", size="1600,2400")
    report = render((out / "bundle" / "report.html").as_uri(), shots / "report.png", tmp_path / "p3",
                    size="1200,5200", budget_ms=2000)

    # the experiment table (medlora's shared view) lists the sweep by its telling name, with the short
    # params and the summary metric columns shown without picking them by hand
    assert parent.info.run_name in table
    for column in ("best_test_auroc_mean.lora", "test_auroc", "test_sensitivity", "val_auroc", "backbone"):
        assert f">{column}<" in table, column
    # the compare view: every run by name, the same short params on the single run and the children
    for r in compared:
        assert r.info.run_name in compare, r.info.run_name
    for key in ("method", "shots", "seed", "backbone", "train.lr", "test_auroc"):
        assert key in compare, key
    # the report: the headline sections and the labelled intervals
    for text in ("Test performance", "Wilson", "DeLong", "Calls at the operating point", "Model card", "Data card"):
        assert text in report, text
    for png in ("mlflow_experiment_table.png", "mlflow_compare.png", "report.png"):
        assert _not_blank(shots / png) > 0.05, png
    if not os.environ.get("MEDLORA_SCREENSHOTS"):
        shutil.rmtree(tmp_path / "p1", ignore_errors=True)
