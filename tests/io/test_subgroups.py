"""Subgroup fields: header fields recorded at ingest (never dates), labels-CSV columns, and that
``evaluate.subgroups`` changes what a run reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset

from medlora.errors import InputError
from medlora.io.subgroups import age_band, header_subgroups, subgroup_table


@pytest.mark.parametrize(("years", "band"), [(0, "0-17"), (17.9, "0-17"), (18, "18-39"), (63, "60-79"), (91, "80+"),
                                             (None, None)])
def test_age_bands(years, band):
    assert age_band(years) == band


def test_header_fields_keep_bands_not_dates():
    ds = Dataset()
    ds.PatientSex, ds.PatientBirthDate, ds.StudyDate = "F", "19600301", "20240115"
    ds.Manufacturer, ds.ViewPosition = "ACME ", "PA"
    got = header_subgroups(ds)
    assert got == {"sex": "F", "age_band": "60-79", "manufacturer": "ACME", "view_position": "PA"}
    ds.PatientAge = "017Y"  # the stated age wins over the dates
    assert header_subgroups(ds)["age_band"] == "0-17"
    assert "1960" not in repr(got) and "2024" not in repr(got)


@pytest.fixture(scope="module")
def phantom_data(phantom_root, tmp_path_factory, tiny_cfg):
    from medlora.io.prepare import prepare_dataset

    tmp = tmp_path_factory.mktemp("subgroups")
    cfg = tiny_cfg(phantom_root, tmp)
    return cfg, prepare_dataset(cfg.data, tmp / "ingest")


def test_ingest_records_header_fields_and_labels_columns_join_by_pseudonym(phantom_data, phantom_root, tmp_path):
    cfg, data = phantom_data
    table = subgroup_table(data.manifest, cfg.data, ["sex", "age_band", "manufacturer"])
    assert len(table) == data.manifest["study_key"].nunique()
    assert set(table["sex"]) == {"F", "M"} and table["age_band"].notna().all()
    assert "PatientBirthDate" not in data.manifest.columns and not data.manifest.astype(str).apply(
        lambda c: c.str.fullmatch(r"19\d{6}")).any().any()
    labels = pd.read_csv(phantom_root / "labels.csv")
    labels["site"] = np.where(np.arange(len(labels)) % 3 == 0, "north", "south")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    data_cfg = cfg.data.model_copy(update={"labels": tmp_path / "labels.csv"})
    site = subgroup_table(data.manifest, data_cfg, ["site"])
    assert site["site"].value_counts().to_dict() == {"south": 40, "north": 20}


def test_a_field_no_study_has_is_named(phantom_data):
    cfg, data = phantom_data
    with pytest.raises(InputError, match=r"\['scanner_room'\] is neither a header field recorded at ingest .* nor a column"):
        subgroup_table(data.manifest, cfg.data, ["scanner_room"])
    manifest = data.manifest.assign(view_position=None)
    with pytest.raises(InputError, match="no study has a value for 'view_position'"):
        subgroup_table(manifest, cfg.data, ["view_position"])


def test_evaluate_subgroups_changes_the_reported_metrics(phantom_data):
    """The config key does something: without it no subgroup metric, with it one set per value."""
    from medlora.evaluate.report import flat_metrics
    from medlora.evaluate.stage import run_evaluate, test_subgroups
    from medlora.experiment.train_eval import study_subgroups

    cfg, data = phantom_data
    rng = np.random.default_rng(0)

    def frame(split: str) -> pd.DataFrame:
        m = data.split(split)
        return pd.DataFrame({"study_key": m["study_key"], "patient_key": m["patient_key"], "label": m["label"],
                             "score": np.clip(m["label"] * 0.5 + rng.random(len(m)) * 0.6, 0, 1)})

    val, test = frame("val"), frame("test")
    names = {}
    for subgroups in ([], ["sex"]):
        c = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"subgroups": subgroups})})
        res, _, _ = run_evaluate(val, test, c.evaluate, subgroups=test_subgroups(test, study_subgroups(data, c)))
        names[len(subgroups)] = {k for k in flat_metrics(res) if "subgroup" in k}
        assert len(res.subgroups) == (0 if not subgroups else 2)
    assert not names[0] and {"test_subgroup_sex_F_auroc", "test_subgroup_sex_M_n"} <= names[1]
