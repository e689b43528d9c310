"""``MANIFEST.sha256``: one ``sha256sum``-compatible line per file of a bundle, and its check.

The manifest lists every file of the bundle except itself, sorted by path, so
``sha256sum -c MANIFEST.sha256`` run inside the bundle verifies it without medlora.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError
from ..hashing import sha256_file

log = logging.getLogger(__name__)
MANIFEST_FILE = "MANIFEST.sha256"


def bundle_files(folder: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``folder`` except the manifest, sorted."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST_FILE)


def write_manifest(folder: Path) -> Path:
    """Hash every file of ``folder`` into ``folder/MANIFEST.sha256``."""
    folder = Path(folder)
    lines = [f"{sha256_file(folder / rel)}  {rel}\n" for rel in bundle_files(folder)]
    path = folder / MANIFEST_FILE
    path.write_text("".join(lines))
    return path


def read_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/MANIFEST.sha256``."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_FILE}: not a medlora bundle, or an incomplete one")
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleError(f"{path} line {number} is not '<sha256>  <path>': {line[:80]!r}")
        entries[rel] = digest
    return entries


@dataclass
class VerifyResult:
    """Files whose content changed, that are listed but missing, or present but not listed."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def describe(self) -> str:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in
                 (("changed", self.changed), ("missing", self.missing), ("extra", self.extra)) if names]
        return "; ".join(parts) or "all files match the manifest"


def verify_bundle(folder: Path) -> VerifyResult:
    """Compare every file of ``folder`` with its manifest entry."""
    folder = Path(folder)
    expected = read_manifest(folder)
    present = set(bundle_files(folder))
    result = VerifyResult(
        changed=sorted(rel for rel, digest in expected.items() if rel in present and sha256_file(folder / rel) != digest),
        missing=sorted(set(expected) - present),
        extra=sorted(present - set(expected)),
    )
    log.info("verify %s: %s", folder, result.describe())
    return result


def require_verified(folder: Path) -> None:
    """Raise :class:`BundleError` naming the files unless ``folder`` matches its manifest."""
    result = verify_bundle(folder)
    if not result.ok:
        raise BundleError(f"bundle {folder} does not match its {MANIFEST_FILE} ({result.describe()}); "
                          "re-export it rather than editing it")
