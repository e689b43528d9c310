"""Pseudonymous keys: raw identifiers become HMAC-SHA256 keys under a site secret before they leave memory.

Manifests, logs, MLflow and exports only ever see these keys. The key of an identifier is
``HMAC-SHA256(secret, kind \\x1f value)`` cut to 64 bits: without the secret nobody can test a guessed
PatientID against a key (a fixed public salt let short IDs be brute-forced in seconds), and a key's bits
carry no structure of the identifier. The same identifiers give the same keys on one site (splits and
study-level aggregation stay stable across runs) and different keys on another site.

The secret is 256 random bits kept in a key file *outside* the run outputs: ``data.secret_file``, else
``$MEDLORA_SECRET_FILE``, else ``$XDG_CONFIG_HOME/medlora/site.key`` (``~/.config/medlora/site.key``).
It is created on first use (mode 0600, folder 0700) and reused after that. Only its path and a short
key id (:func:`key_id`, an HMAC of a fixed string, which reveals nothing about the secret) are ever
logged; the secret itself never is. Back the file up with the data: a lost key file means new keys for
every patient, so persisted splits no longer match and are drawn anew.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

SECRET_ENV = "MEDLORA_SECRET_FILE"
SCHEME = "hmac-sha256"
_SECRET_BYTES = 32


def default_secret_file() -> Path:
    """``$MEDLORA_SECRET_FILE``, else ``$XDG_CONFIG_HOME/medlora/site.key``, else ``~/.config/medlora/site.key``."""
    if os.environ.get(SECRET_ENV):
        return Path(os.environ[SECRET_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "medlora" / "site.key"


@dataclass(frozen=True)
class SiteKey:
    """The site secret (hidden from ``repr``) and the scheme marker runs are tagged with."""

    secret: bytes = field(repr=False)
    path: Path | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.secret)

    @property
    def scheme(self) -> str:
        """``hmac-sha256:<key id>``: says the keys were made with a site secret, and with which one."""
        return f"{SCHEME}:{self.key_id}"

    def key(self, value: str, kind: str) -> str:
        """:func:`pseudonym` of ``value`` under this secret."""
        return pseudonym(value, self.secret, kind)


def key_id(secret: bytes) -> str:
    """8 hex digits of ``HMAC(secret, "medlora-key-id")``: tells two secrets apart, reveals nothing of them."""
    return hmac.new(secret, b"medlora-key-id", hashlib.sha256).hexdigest()[:8]


def pseudonym(value: str, secret: bytes | str, kind: str) -> str:
    """A 16-hex-digit HMAC-SHA256 key of ``value`` under ``secret``, prefixed by ``kind`` (``pat-3f2a...``)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(raw, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:16]}"


def load_site_key(secret_file: Path | None = None) -> SiteKey:
    """The site secret of ``secret_file`` (default :func:`default_secret_file`), created on first use.

    Raises:
        ConfigError: the file exists but does not hold a 256-bit hex secret, or cannot be created.
    """
    path = Path(secret_file).expanduser() if secret_file else default_secret_file()
    if not path.exists():
        _create(path)
    try:
        text = path.read_text().strip()
        secret = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"site secret file {path} is unreadable or not hex ({type(err).__name__}); "
                          f"it must hold {2 * _SECRET_BYTES} hex digits (data.secret_file, ${SECRET_ENV})") from None
    if len(secret) < _SECRET_BYTES:
        raise ConfigError(f"site secret file {path} holds {len(secret) * 8} bits; at least {_SECRET_BYTES * 8} are needed")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("site secret file %s is readable by other users (mode %o); chmod 600 it", path,
                    path.stat().st_mode & 0o777)
    return SiteKey(secret, path)


def _create(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first: use theirs
    except OSError as err:
        raise ConfigError(f"cannot create the site secret file {path} ({err.strerror}); set data.secret_file "
                          f"or ${SECRET_ENV} to a writable path outside the run outputs") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(_SECRET_BYTES) + "\n")
    log.warning("created a new site secret %s (key id %s): back it up with the data; if it is lost, every "
                "patient gets a new key and persisted splits are drawn anew", path, key_id(bytes.fromhex(path.read_text().strip())))
