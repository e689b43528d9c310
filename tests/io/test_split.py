import numpy as np
import pandas as pd
import pytest

from medlora.config import SplitConfig
from medlora.errors import LeakageError
from medlora.io.split import assign_splits, audit_leakage


def _manifest(n_patients=50, images=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random(n_patients) < 0.3
    rows = [
        {"sample_id": f"s{p}-{i}", "patient_key": f"p{p}", "sop_key": f"sop{p}-{i}", "label": int(labels[p])}
        for p in range(n_patients)
        for i in range(images)
    ]
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_stratified(tmp_path):
    m = assign_splits(_manifest(), SplitConfig(), tmp_path / "split.csv")
    assert m.groupby("patient_key")["split"].nunique().max() == 1
    per_split = m.drop_duplicates("patient_key").groupby("split")["label"].agg(["mean", "size"])
    assert set(per_split.index) == {"train", "val", "test"}
    assert per_split["mean"].between(0.15, 0.45).all()  # ~30% abnormal in each split
    assert per_split.loc["train", "size"] > per_split.loc["val", "size"]
    audit_leakage(m)


def test_split_is_persisted_and_reused(tmp_path):
    f = tmp_path / "split.csv"
    first = assign_splits(_manifest(), SplitConfig(seed=3), f)
    again = assign_splits(_manifest(), SplitConfig(seed=3), f)
    pd.testing.assert_series_equal(first["split"], again["split"])
    # new patients join without moving anyone
    bigger = pd.concat([_manifest(), _manifest(60).query("patient_key >= 'p50'")])
    grown = assign_splits(bigger, SplitConfig(seed=3), f)
    merged = first.merge(grown, on="sample_id", suffixes=("_a", "_b"))
    assert (merged["split_a"] == merged["split_b"]).all()
    assert grown["split"].notna().all()


def test_different_seed_gives_different_split(tmp_path):
    a = assign_splits(_manifest(), SplitConfig(seed=0), tmp_path / "a.csv")
    b = assign_splits(_manifest(), SplitConfig(seed=1), tmp_path / "b.csv")
    assert (a["split"] != b["split"]).any()


@pytest.mark.parametrize("column", ["patient_key", "sop_key", "pixel_hash"])
def test_leakage_audit_catches_a_planted_duplicate(tmp_path, column):
    m = assign_splits(_manifest(), SplitConfig(), tmp_path / "s.csv")
    m["pixel_hash"] = m["sample_id"]
    train_row = m[m["split"] == "train"].iloc[0]
    test_idx = m.index[m["split"] == "test"][0]
    m.loc[test_idx, column] = train_row[column]
    with pytest.raises(LeakageError, match=f"{column}={train_row[column]} in test\\+train"):
        audit_leakage(m)
