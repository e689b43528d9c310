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
