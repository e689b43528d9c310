"""Support-set sampling (per patient, k per class, seeded, nested, "all")."""

import numpy as np
import pandas as pd
import pytest

from medlora.config import config_from_dict
from medlora.errors import ConfigError
from medlora.train.support import check_shots, draw_support, finding_strata


def manifest(n_normal: int = 8, n_abnormal: int = 5, per_patient: int = 3) -> pd.DataFrame:
    rows = []
    for i in range(n_normal + n_abnormal):
        label = int(i >= n_normal)
        for j in range(per_patient):
            rows.append({"sample_id": f"s{i}-{j}", "patient_key": f"pat-{i:02d}", "study_key": f"stu-{i}", "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows not grouped


def base_config(**fewshot):
    return config_from_dict({"data": {"root": "/nowhere"}, "train": {"lr": 1e-3, "epochs": 3},
                             "fewshot": {"shots": [1, 2], "seeds": [0, 1], **fewshot}})


@pytest.mark.parametrize("shots", [1, 2, 5])
def test_support_set_is_k_patients_per_class_with_all_their_samples(shots):
    train = manifest()
    s = draw_support(train, shots, seed=0)
    chosen = train.iloc[s.positions]
    per_class = chosen.groupby("label")["patient_key"].nunique()
    assert per_class.to_dict() == {0: shots, 1: shots}
    assert set(chosen["patient_key"]) == set(s.patient_keys)
    assert len(chosen) == 3 * 2 * shots  # every sample of each chosen patient


def test_support_sets_are_seeded_nested_and_differ_across_seeds():
    train = manifest()
    a, b = draw_support(train, 2, seed=0), draw_support(train, 2, seed=0)
    assert a.key_hash == b.key_hash and np.array_equal(a.positions, b.positions)
    assert draw_support(train, 2, seed=1).key_hash != a.key_hash
    assert set(draw_support(train, 1, seed=0).patient_keys) <= set(a.patient_keys) <= set(
        draw_support(train, 4, seed=0).patient_keys)


def test_all_is_the_whole_training_split():
    train = manifest()
    s = draw_support(train, "all", seed=3)
    assert list(s.positions) == list(range(len(train))) and len(s.patient_keys) == 13


def test_too_many_shots_names_the_class():
    with pytest.raises(ConfigError, match="fewshot.shots=6 needs 6 training patients per class; label 1 has 5"):
        draw_support(manifest(), 6, seed=0)


FINDINGS = ("nodule", "effusion", "mass")


def multilabel_manifest(n_patients: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two samples per patient; ``mass`` is rare (4 patients, all with effusion), nodule sometimes unknown."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        values = [str(int(rng.random() < 0.3)), str(int(rng.random() < 0.3)), "0"]
        if p < 4:
            values[1:] = ["1", "1"]
        elif p % 7 == 0 and values[0] == "0":
            values[0] = ""  # unknown nodule: this patient is neither positive nor "no finding"
        for j in range(2):
            rows.append({"sample_id": f"s{p}-{j}", "patient_key": f"pat-{p:02d}", "study_key": f"stu-{p}",
                         "findings": ",".join(values), "label": int("1" in values)})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def per_stratum(train: pd.DataFrame, keys) -> dict[str, int]:
    patients = train[train["patient_key"].isin(keys)].drop_duplicates("patient_key")
    values = [code.split(",") for code in patients["findings"]]
    counts = {f: sum(v[j] == "1" for v in values) for j, f in enumerate(FINDINGS)}
    counts["no finding"] = sum(all(c == "0" for c in v) for v in values)
    return counts


@pytest.mark.parametrize("shots", [1, 2, 4])
def test_multilabel_support_has_k_patients_per_finding_and_k_normal(shots):
    train = multilabel_manifest()
    s = draw_support(train, shots, seed=0, names=FINDINGS)
    counts = per_stratum(train, s.patient_keys)
    assert min(counts.values()) >= shots and counts["no finding"] == shots
    assert counts["mass"] == shots  # the rare finding is filled first, exactly
    assert len(s.patient_keys) <= 4 * shots  # co-occurring findings share patients
    chosen = train.iloc[s.positions]
    assert set(chosen["patient_key"]) == set(s.patient_keys) and len(chosen) == 2 * len(s.patient_keys)
    for code in chosen["findings"]:  # a patient with only absent and unknown findings is neither positive nor normal
        assert "1" in code.split(",") or code.split(",") == ["0"] * 3
    assert any("" in c.split(",") and "1" not in c.split(",") for c in train["findings"])  # such patients exist


def test_multilabel_support_is_seeded_and_nested():
    train = multilabel_manifest()
    a = draw_support(train, 2, seed=0, names=FINDINGS)
    assert a.key_hash == draw_support(train.sample(frac=1.0, random_state=5), 2, seed=0).key_hash  # row order, names
    assert draw_support(train, 2, seed=1).key_hash != a.key_hash
    for seed in range(4):
        sets = [set(draw_support(train, k, seed=seed).patient_keys) for k in (1, 2, 3, 4)]
        assert sets[0] <= sets[1] <= sets[2] <= sets[3]


def test_unknown_findings_are_not_positives():
    train = pd.DataFrame({"sample_id": list("abcdef"), "patient_key": ["p1", "p2", "p3", "p4", "p5", "p6"],
                          "findings": ["1,0", ",0", ",1", "0,1", "0,0", "1,1"], "label": [1, 0, 1, 1, 0, 1]})
    strata = finding_strata(train, ["nodule", "effusion"])
    assert strata["nodule"].tolist() == [True, False, False, False, False, True]
    assert strata["no finding"].tolist() == [False, False, False, False, True, False]  # p2's nodule is unknown
    with pytest.raises(ConfigError, match="fewshot.shots contains 2, but the training split has only 1 patients "
                                          "with no finding; use at most 1 or 'all'"):
        check_shots(train, config_from_dict({"data": {"root": "/x"}, "fewshot": {"shots": [1, 2]}}).fewshot,
                    ["nodule", "effusion"])


def test_check_shots_names_the_finding_lacking_patients():
    fewshot = base_config(shots=[2, 5]).fewshot
    with pytest.raises(ConfigError, match="only 4 patients positive for mass; use at most 4"):
        check_shots(multilabel_manifest(), fewshot, FINDINGS)
    with pytest.raises(ConfigError, match="only 5 patients of label 1; use"):
        check_shots(manifest(), base_config(shots=[6]).fewshot)
    with pytest.raises(ConfigError, match=r"only 5 patients of label 1 \(abnormal\); use at most 5"):
        check_shots(manifest(), base_config(shots=[6]).fewshot, ["normal", "abnormal"])
    check_shots(multilabel_manifest(), base_config(shots=[1, 4, "all"]).fewshot, FINDINGS)
    with pytest.raises(ConfigError, match="mass has 4"):
        draw_support(multilabel_manifest(), 5, seed=0, names=FINDINGS)


def test_multiclass_support_has_k_patients_per_class():
    train = pd.concat([manifest(4, 5).assign(label=lambda f: f["label"] * 2),
                       manifest(0, 6).assign(label=1, patient_key=lambda f: "b" + f["patient_key"])])
    s = draw_support(train, 3, seed=0)
    assert train.iloc[s.positions].groupby("label")["patient_key"].nunique().to_dict() == {0: 3, 1: 3, 2: 3}
    with pytest.raises(ConfigError, match=r"label 0 \(grade0\) has 4"):
        draw_support(train, 5, seed=0, names=["grade0", "grade1", "grade2"])
