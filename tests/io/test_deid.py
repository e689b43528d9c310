"""Site-secret pseudonyms: HMAC keys that nobody without the key file can reverse or test a guess against."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from medlora.errors import ConfigError
from medlora.io.deid import SCHEME, SiteKey, load_site_key, pseudonym


def test_a_missing_secret_is_created_once_private_and_reused(tmp_path, caplog) -> None:
    path = tmp_path / "cfg" / "medlora" / "site.key"
    first = load_site_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(path.read_text().strip())) == 32  # 256 random bits
    again = load_site_key(path)
    assert again.secret == first.secret and again.key("A123456", "pat") == first.key("A123456", "pat")
    assert first.scheme == f"{SCHEME}:{first.key_id}" and len(first.key_id) == 8
    # the secret itself appears in no log line and no repr
    assert path.read_text().strip() not in caplog.text and path.read_text().strip() not in repr(first)


def test_the_same_identifier_gets_another_key_on_another_site(tmp_path) -> None:
    a, b = load_site_key(tmp_path / "a.key"), load_site_key(tmp_path / "b.key")
    assert a.secret != b.secret and a.key_id != b.key_id
    assert a.key("A123456", "pat") != b.key("A123456", "pat")
    assert a.key("A123456", "pat") != a.key("A123456", "stu")  # kinds do not collide


def test_a_key_carries_no_structure_of_the_identifier() -> None:
    site = SiteKey(bytes(range(32)))
    keys = [site.key(f"A{i:06d}", "pat") for i in range(2000)]
    assert len(set(keys)) == len(keys) and all(k.startswith("pat-") and len(k) == 20 for k in keys)
    bits = np.array([[int(c, 16) >> s & 1 for c in k[4:] for s in range(4)] for k in keys])
    # each of the 64 key bits is a fair coin over sequential identifiers (no prefix or order survives)
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 0.06
    # neighbouring identifiers differ in about half of their bits
    flips = (bits[1:] != bits[:-1]).mean(axis=1)
    assert 0.4 < flips.mean() < 0.6
    assert keys != sorted(keys)  # the keys' order is not the identifiers' order


def test_the_key_is_an_hmac_of_the_secret_not_a_salted_hash() -> None:
    import hashlib
    import hmac

    secret = b"\x01" * 32
    digest = hmac.new(secret, b"pat\x1fA123456", hashlib.sha256).hexdigest()
    assert pseudonym("A123456", secret, "pat") == f"pat-{digest[:16]}"


@pytest.mark.parametrize(("content", "message"), [("not hex at all\n", "not hex"), ("abcd\n", "holds 16 bits")])
def test_a_broken_secret_file_is_refused_naming_it(tmp_path, content, message) -> None:
    path = tmp_path / "site.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=message) as err:
        load_site_key(path)
    assert str(path) in str(err.value)


def test_a_secret_readable_by_others_is_warned_about(tmp_path, caplog) -> None:
    path = tmp_path / "site.key"
    load_site_key(path)
    path.chmod(0o644)
    load_site_key(path)
    assert "readable by other users" in caplog.text
