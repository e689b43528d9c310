"""Ingest pydicom's bundled test files plus ../shared/data/dicom and count what happened to each file.

    .venv/bin/python benchmarks/ingest_corpus.py [--shared PATH] [--show N]

Only files already on this machine are used: pydicom's own ``test_files`` folder and its download
cache (never :func:`pydicom.data.get_testdata_files`, which downloads the files it lacks). Every file is
linked into one temporary root labelled as a whole (``path`` ``.``), ingested once (with
``data.volume_min_slices: 3``, so the shared 3-slice CT is assembled as a volume), and accounted for:

* files scanned, kept (named by the manifest), skipped by category;
* files named nowhere (neither in the manifest nor in the report; target 0), named twice (target 0);
* crashes (an exception that is not a medlora error; target 0);
* tracebacks or decoder messages printed on stderr during the ingest (target 0): stderr is captured
  at the file-descriptor level, so C extensions printing directly are counted too.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def local_pydicom_files() -> list[tuple[str, Path]]:
    """(name under the corpus root, file) of pydicom's bundled test files and its download cache."""
    import pydicom.data
    from pydicom.data.download import get_data_dir

    out = []
    bundled = Path(pydicom.data.__file__).parent / "test_files"
    cache = Path(get_data_dir())
    for prefix, base in (("pydicom", bundled), ("pydicom_cache", cache)):
        if base.is_dir():
            out += [(f"{prefix}/{p.relative_to(base).as_posix()}", p) for p in sorted(base.rglob("*"))
                    if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    return out


def shared_files(shared: Path) -> list[tuple[str, Path]]:
    return [(f"shared/{p.relative_to(shared).as_posix()}", p) for p in sorted(shared.rglob("*")) if p.is_file()]


class _StderrCapture:
    """Redirect file descriptor 2 into a temporary file for the duration of the block."""

    def __enter__(self) -> _StderrCapture:
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data" / "dicom")
    parser.add_argument("--show", type=int, default=0, help="print the first N report rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("MEDLORA_SECRET_FILE", os.path.join(tempfile.gettempdir(), f"medlora-bench-{os.getpid()}.key"))

    from medlora.config import DataConfig
    from medlora.errors import MedloraError
    from medlora.io.ingest import run_ingest
    from medlora.io.report import manifest_files
    from medlora.io.scan import candidate_files

    files = local_pydicom_files() + (shared_files(args.shared) if args.shared.is_dir() else [])
    logs = io.StringIO()  # medlora's own summary lines, kept apart from what third parties print
    logging.basicConfig(level=logging.WARNING, stream=logs, format="%(levelname).1s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        for name, src in files:
            dst = root / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
        labels = Path(tmp) / "labels.csv"
        labels.write_text("path,label\n.,normal\n")
        scanned = [p.relative_to(root).as_posix() for p in candidate_files(root)]
        crashes, result, error = 0, None, ""
        start = time.perf_counter()
        with _StderrCapture() as captured:
            try:
                result = run_ingest(DataConfig(root=root, label_key="path", labels=labels, volume_min_slices=3))
            except MedloraError as err:
                error = str(err)
            except Exception:  # noqa: BLE001 - a crash is what this script counts
                crashes, error = 1, traceback.format_exc()
        seconds = time.perf_counter() - start
    printed = captured.text
    print(f"inputs: {len(files)} files ({sum(1 for n, _ in files if n.startswith('pydicom'))} pydicom, "
          f"{sum(1 for n, _ in files if n.startswith('shared'))} shared); ingest {seconds:.1f} s")
    print(f"files scanned: {len(scanned)}")
    if result is None:
        print(f"ingest failed: {error}")
        print(f"crashes: {crashes} (target 0)")
        return 1
    report = result.skipped
    skipped = report[report["status"] == "skipped"]
    named = Counter(manifest_files(result.manifest) + list(skipped["path"]))
    print(f"kept: {len(set(manifest_files(result.manifest)))} files in {len(result.manifest)} manifest rows "
          f"({', '.join(f'{k}: {v}' for k, v in result.manifest['kind'].value_counts().items())})")
    print(f"skipped: {len(skipped)}")
    for category, n in skipped["category"].value_counts().items():
        print(f"  {n:4d}  {category}")
    notes = report[report["status"] == "note"]["category"].value_counts()
    print("notes: " + (", ".join(f"{k}: {v}" for k, v in notes.items()) or "none"))
    nowhere = sorted(set(scanned) - set(named))
    twice = sorted(k for k, v in named.items() if v > 1)
    print(f"files named nowhere: {len(nowhere)} (target 0){': ' + ', '.join(nowhere[:5]) if nowhere else ''}")
    print(f"files named twice: {len(twice)} (target 0){': ' + ', '.join(twice[:5]) if twice else ''}")
    print(f"crashes: {crashes} (target 0)")
    tracebacks = printed.count("Traceback")
    print(f"decoder tracebacks printed: {tracebacks} (target 0); other stderr lines: "
          f"{sum(1 for line in printed.splitlines() if line.strip() and 'Traceback' not in line)}")
    for line in [line for line in printed.splitlines() if line.strip()][:5]:
        print(f"  stderr: {line[:200]}")
    for row in report.head(args.show).itertuples():
        print(f"  {row.status:8s} {row.category:24s} {row.path}: {row.reason[:150]}")
    return 0 if not (nowhere or twice or crashes or tracebacks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
