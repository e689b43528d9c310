"""Pseudonymous keys: raw DICOM identifiers become salted hashes before they leave memory.

Manifests, logs, MLflow and exports only ever see these keys. The salt is a per-site secret
(``data.salt``); the same identifier gives the same key for the same salt, so splits and
study-level aggregation stay stable across runs.
"""

from __future__ import annotations

import hashlib


def pseudonym(value: str, salt: str, kind: str) -> str:
    """A 16-hex-digit salted hash of ``value``, prefixed by ``kind`` (e.g. ``pat-3f2a...``)."""
    digest = hashlib.sha256(f"{salt}\x1f{kind}\x1f{value}".encode()).hexdigest()
    return f"{kind}-{digest[:16]}"
