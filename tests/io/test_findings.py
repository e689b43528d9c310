"""Multi-label labels: both CSV layouts, masking of unknown/uncertain values, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medlora.config import DataConfig
from medlora.errors import InputError
from medlora.io.findings import decode, encode, read_findings, split_findings_label

FINDINGS = ["Effusion", "Nodule"]


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(root=tmp_path, task="multilabel", findings=FINDINGS, **kw)


def _csv(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("policy", "uncertain_value"),
    [("ignore", np.nan), ("positive", 1.0), ("negative", 0.0)],
)
def test_columns_layout_masks_blanks_and_applies_the_uncertain_policy(tmp_path, policy, uncertain_value):
    path = _csv(tmp_path, "key,Effusion,Nodule\na,1,0\nb,,-1\nc,0.0,1.0\n")
    got = read_findings(path, "key", _cfg(tmp_path, uncertain=policy))
    np.testing.assert_array_equal(decode(got["a"]), [1, 0])
    np.testing.assert_array_equal(decode(got["b"]), [np.nan, uncertain_value])  # blank stays unknown
    np.testing.assert_array_equal(decode(got["c"]), [0, 1])


def test_normal_column_turns_blanks_into_absent_and_refuses_contradictions(tmp_path):
    path = _csv(tmp_path, "key,Effusion,Nodule,No Finding\na,,,1\nb,,1,\n")
    got = read_findings(path, "key", _cfg(tmp_path, normal="No Finding"))
    np.testing.assert_array_equal(decode(got["a"]), [0, 0])
    np.testing.assert_array_equal(decode(got["b"]), [np.nan, 1])
    _csv(tmp_path, "key,Effusion,Nodule,No Finding\na,1,,1\n")
    with pytest.raises(InputError, match=r"line 2: column 'No Finding' \(data.normal\) is 1 but a finding"):
        read_findings(path, "key", _cfg(tmp_path, normal="No Finding"))


def test_pipe_layout_with_a_no_finding_name(tmp_path):
    path = _csv(tmp_path, "key,Finding Labels\na,Effusion|Nodule\nb,No Finding\nc,Nodule\nd,\n")
    got = read_findings(path, "key", _cfg(tmp_path, normal="No Finding", label_column="Finding Labels"))
    assert {k: encode(decode(v)) for k, v in got.items()} == {"a": "1,1", "b": "0,0", "c": "0,1", "d": ","}


@pytest.mark.parametrize(
    ("text", "kw", "match"),
    [
        ("key,Effusion,Nodule\na,1,yes\n", {}, r"line 2: column 'Nodule' holds 'yes'; accepted: 1 .*blank .*-1"),
        ("key,Effusion,Nodule\na,2,0\n", {}, r"column 'Effusion' holds '2'"),
        ("key,label\na,Effusion|Mass\n", {}, r"line 2: column 'label' names 'Mass', which is not one of data.findings"),
        ("key,label\na,No Finding|Nodule\n", {"normal": "No Finding"}, r"lists 'No Finding' \(data.normal\) together"),
        ("key,other\na,1\n", {}, r"neither a column per finding \(missing \['Effusion', 'Nodule'\]\) nor the column 'label'"),
        ("key,Effusion,Nodule\na,1,0\na,0,0\n", {}, r"line 3 \(key\): key of line 2 given again with different findings"),
    ],
)
def test_bad_findings_name_the_column_and_value(tmp_path, text, kw, match):
    with pytest.raises(InputError, match=match):
        read_findings(_csv(tmp_path, text), "key", _cfg(tmp_path, **kw))


def test_manifest_gets_findings_codes_and_an_any_finding_label(tmp_path):
    manifest = pd.DataFrame({"sample_id": ["s1", "s2", "s3"], "label": ["1,0", "0,", ",0"]})
    out = split_findings_label(manifest, _cfg(tmp_path))
    assert out["findings"].tolist() == ["1,0", "0,", ",0"]
    assert out["label"].tolist() == [1, 0, 0]  # unknown is never counted as present


def test_config_keys_belong_to_their_task(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="data.findings applies to data.task multilabel, not binary"):
        DataConfig(root=tmp_path, findings=["a"])
    with pytest.raises(ValidationError, match="data.abnormal applies to data.task binary"):
        DataConfig(root=tmp_path, task="multiclass", classes=["a", "b", "c"], abnormal="b")
    with pytest.raises(ValidationError, match="needs data.findings"):
        DataConfig(root=tmp_path, task="multilabel")
    with pytest.raises(ValidationError, match="data.normal='x' is not one of data.classes"):
        DataConfig(root=tmp_path, task="multiclass", classes=["a", "b", "c"], normal="x")
    assert DataConfig(root=tmp_path, task="multilabel", findings=["a", "b"]).outputs == ["a", "b"]


def test_ingest_joins_findings_by_normalised_path_keys_and_views_keep_them(tmp_path):
    from medlora.config import PreprocessConfig, SynthConfig
    from medlora.io.ingest import run_ingest
    from medlora.io.synth import write_phantoms
    from medlora.transforms.samples import expand_views

    root = tmp_path / "data"
    write_phantoms(root, SynthConfig(patients=6, images_per_patient=1, size=16, seed=3, findings=["effusion", "nodule"]))
    folders = sorted(p.relative_to(root).as_posix() for p in root.glob("patient*"))
    side = tmp_path / "side"
    side.mkdir()
    # one key per spelling: root-relative, with ./ and .., relative to the CSV's folder, absolute
    keys = [folders[0], f"./{folders[1]}/", f"{folders[2]}/../{folders[2]}", f"../data/{folders[3]}",
            str(root / folders[4]), folders[5]]
    codes = ["1,0", "0,1", "0,0", "1,1", ",1", "0,"]
    rows = [f"{k},{c}" for k, c in zip(keys, codes, strict=True)]
    (side / "labels.csv").write_text("path,Effusion,Nodule\n" + "\n".join(rows) + "\n")
    cfg = _cfg(root, labels=side / "labels.csv", label_key="path")
    manifest = run_ingest(cfg).manifest
    got = {path.split("/")[0]: code for path, code in zip(manifest["path"], manifest["findings"], strict=True)}
    assert got == dict(zip(folders, codes, strict=True))
    assert sorted(manifest["label"].tolist()) == [0, 0, 1, 1, 1, 1]  # any finding present; unknown is not
    views = expand_views(manifest, PreprocessConfig())
    assert views["findings"].tolist() == manifest["findings"].tolist()

    (side / "labels.csv").write_text(f"path,Effusion,Nodule\n{folders[0]},1,0\n./{folders[0]},0,0\n")
    with pytest.raises(InputError, match=r"labels.csv line 3 \(path\): key of line 2 given again with different findings"):
        run_ingest(cfg)
