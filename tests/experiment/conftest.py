"""Fixtures of the orchestration tests: a second site's phantoms and a site config on the session's store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def site_b(tmp_path_factory) -> Path:
    """A second site's phantoms: other patients, another scanner (blur, noise, offset), another prevalence."""
    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    root = tmp_path_factory.mktemp("site_b")
    write_phantoms(root, SynthConfig(patients=40, images_per_patient=2, size=32, seed=0, site="b", abnormal_fraction=0.4))
    return root


def site_config(finished_run, root: Path, tmp: Path, **data) -> Path:
    """The site's config: its own data (and data name), the tracking store of the finished run."""
    _, cfg, cfg_file = finished_run
    raw = yaml.safe_load(cfg_file.read_text())
    raw["data"] = {"name": "site_b", "root": str(root), "split": {"file": str(tmp / "split.csv")}, **data}
    raw["evaluate"]["bootstrap"] = 100
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


