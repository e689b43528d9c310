import pandas as pd
import pytest

from medlora.config import SynthConfig
from medlora.errors import InputError
from medlora.io.synth import STAMP_FILE, ensure_phantoms


def _labels(root):
    return pd.read_csv(root / "labels.csv")


def test_phantoms_are_written_once_and_rewritten_when_the_settings_change(tmp_path):
    root = tmp_path / "phantoms"
    small = SynthConfig(patients=6, images_per_patient=1, size=32)
    ensure_phantoms(root, small)
    first = (root / "labels.csv").stat().st_mtime_ns
    ensure_phantoms(root, small)  # the same settings: kept as they are
    assert (root / "labels.csv").stat().st_mtime_ns == first
    ensure_phantoms(root, small.model_copy(update={"patients": 9}))
    assert len(_labels(root)) == 9 and len(list(root.glob("patient*"))) == 9


def test_a_folder_written_by_an_older_generator_is_written_again(tmp_path):
    root = tmp_path / "phantoms"
    cfg = SynthConfig(patients=6, images_per_patient=1, size=32)
    ensure_phantoms(root, cfg)
    (root / STAMP_FILE).unlink()  # as folders written before the stamp existed
    (root / "labels.csv").write_text("StudyInstanceUID,label\n")
    ensure_phantoms(root, cfg)
    assert len(_labels(root)) == 6 and (root / STAMP_FILE).is_file()


def test_a_folder_with_other_files_is_never_touched(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "scan.dcm").write_bytes(b"mine")
    with pytest.raises(InputError, match=r"scan\.dcm"):
        ensure_phantoms(root, SynthConfig(patients=6, images_per_patient=1, size=32))
    assert (root / "scan.dcm").read_bytes() == b"mine" and not (root / "labels.csv").exists()


def test_second_site_phantoms_differ_as_another_scanner_would(tmp_path):
    """Site b: other patients, a manufacturer of its own, thicker slices, offset and smoother, noisier pixels."""
    import numpy as np
    import pydicom

    cfg = SynthConfig(patients=6, images_per_patient=1, size=64, difficulty="subtle")
    ensure_phantoms(tmp_path / "a", cfg)
    ensure_phantoms(tmp_path / "b", cfg.model_copy(update={"site": "b"}))
    a, b = (sorted((tmp_path / s).rglob("*.dcm")) for s in ("a", "b"))
    da, db = pydicom.dcmread(a[0]), pydicom.dcmread(b[0])
    assert (da.Manufacturer, db.Manufacturer) == ("medlora-synth", "medlora-synth site B")
    assert float(db.SliceThickness) > float(da.SliceThickness)
    assert set(_labels(tmp_path / "a")["StudyInstanceUID"]).isdisjoint(_labels(tmp_path / "b")["StudyInstanceUID"])
    hu = [np.stack([pydicom.dcmread(f).pixel_array.astype(float) - 1024 for f in files]) for files in (a, b)]
    air = [np.median(h[h < -500]) for h in hu]  # outside the body: -1000 HU at site a
    assert abs(air[0] + 1000) < 40
    assert abs(air[1] - (40 + (-1000 - 40) * 0.8 + 60)) < 60  # contrast compressed, then offset
    # the site-a folder's stamp has no site key: folders written before sites existed are not rewritten
    assert "site" not in (tmp_path / "a" / STAMP_FILE).read_text()
