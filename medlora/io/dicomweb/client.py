"""One DICOMweb session per server, credentials from the environment or ``~/.netrc`` only.

A server is named by its base URL (``https://pacs.example.org/dicom-web``). A URL that carries
credentials (``https://user:pw@host/...``) is refused: URLs end up in shell histories, configs and
logs. Credentials come, first found first used, from

1. ``$MEDLORA_DICOMWEB_TOKEN``: sent as ``Authorization: Bearer <token>``;
2. ``$MEDLORA_DICOMWEB_USER`` and ``$MEDLORA_DICOMWEB_PASSWORD``: HTTP basic authentication;
3. the ``machine <host>`` entry of ``$NETRC`` or ``~/.netrc``: HTTP basic authentication;

else none are sent. Messages name the server by :func:`mask_url` and an HTTP failure by its status
(:func:`describe_failure`), never by the request URL, which holds study and instance UIDs.
``dicomweb-client`` logs those UIDs at INFO: its logger is held at WARNING here.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ...errors import ConfigError, PacsError

log = logging.getLogger(__name__)

TOKEN_ENV, USER_ENV, PASSWORD_ENV = "MEDLORA_DICOMWEB_TOKEN", "MEDLORA_DICOMWEB_USER", "MEDLORA_DICOMWEB_PASSWORD"
CREDENTIALS_HELP = (f"set {TOKEN_ENV} (a bearer token), or {USER_ENV} and {PASSWORD_ENV}, or a "
                    "'machine <host> login <user> password <password>' line in ~/.netrc ($NETRC)")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}  # worth another try; any other HTTP error is final
TRANSFER_ERRORS = (OSError, ValueError)  # requests' errors are OSErrors; a malformed answer a ValueError
T = TypeVar("T")


def mask_url(url: str) -> str:
    """``url`` with its user info replaced by ``***`` and without query or fragment (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = ("***@" if parts.username or parts.password else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def server_url(url: str) -> str:
    """The checked base URL of a DICOMweb server (no trailing slash).

    Raises:
        ConfigError: not http(s), no host, or credentials in the URL (the message masks them and says
            where credentials go instead).
    """
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"DICOMweb URL {mask_url(str(url))!r} is not an http(s) URL with a host "
                          "(e.g. https://pacs.example.org/dicom-web)")
    if parts.username or parts.password:
        raise ConfigError(f"DICOMweb URL {mask_url(str(url))} carries credentials, and URLs end up in shell "
                          f"histories and logs; write it without them and {CREDENTIALS_HELP}")
    if parts.query or parts.fragment:
        raise ConfigError(f"DICOMweb URL {mask_url(str(url))} has a query or fragment; give the service's base URL")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Credentials:
    """How requests to one server authenticate; ``where`` says from where (never the secret)."""

    headers: dict[str, str]
    auth: tuple[str, str] | None
    where: str

    def __repr__(self) -> str:
        return f"Credentials(from {self.where})"


def credentials(url: str, env: dict[str, str] | None = None) -> Credentials:
    """The credentials for ``url``'s host: token, user/password from the environment, else netrc."""
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return Credentials({"Authorization": f"Bearer {env[TOKEN_ENV]}"}, None, f"${TOKEN_ENV}")
    if env.get(USER_ENV):
        if not env.get(PASSWORD_ENV):
            raise ConfigError(f"${USER_ENV} is set but ${PASSWORD_ENV} is not; {CREDENTIALS_HELP}")
        return Credentials({}, (env[USER_ENV], env[PASSWORD_ENV]), f"${USER_ENV}/${PASSWORD_ENV}")
    host = urlsplit(url).hostname or ""
    path = env.get("NETRC") or os.path.expanduser("~/.netrc")
    if os.path.isfile(path):
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError) as err:
            raise ConfigError(f"cannot read {path}: {type(err).__name__} (line {getattr(err, 'lineno', '?')})") from None
        if entry and entry[0]:
            return Credentials({}, (entry[0], entry[2] or ""), f"{path} (machine {host})")
    return Credentials({}, None, "none")


def open_client(url: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` with its credentials and without the library's
    own retries (:func:`with_retries` retries, with backoff, what is worth retrying)."""
    import requests
    from dicomweb_client import DICOMwebClient

    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # its INFO lines carry UIDs
    base = server_url(url)
    creds = credentials(base, env)
    session = requests.Session()
    session.trust_env = False  # no netrc or proxy guessed behind our back: credentials come from above
    session.auth = creds.auth
    session.headers.update(creds.headers)
    # no gzip of the HTTP body: pixel data gains little from it, and compressing every instance on the
    # server halved the pull rate on Orthanc (images that need compression travel in a compressed
    # transfer syntax, which WADO-RS retrieves as stored)
    session.headers["Accept-Encoding"] = "identity"
    client = DICOMwebClient(base, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    log.debug("DICOMweb server %s, credentials from %s", base, creds.where)
    return client


def search_all(search: Callable[..., list[dict[str, Any]]], page: int = 200, max_pages: int = 10_000,
               **kwargs: Any) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search (``client.search_for_*``), page by page with limit/offset.

    Stops at an empty page or a page that brings nothing new: some servers ignore ``offset`` (Orthanc
    with some filters) and answer the first page again, where ``get_remaining`` would loop forever."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(max_pages):
        offset = len(out)
        rows = with_retries(lambda offset=offset: search(limit=page, offset=offset, **kwargs))
        new = [r for r in rows if (key := json.dumps(r, sort_keys=True)) not in seen and not seen.add(key)]
        if not new:
            break
        out += new
    return out


def describe_failure(err: BaseException) -> str:
    """What went wrong, without the request URL: ``HTTP 503 Service Unavailable``, ``connection
    refused``, ``timed out``, or the error type and the first line of its message."""
    import requests

    response = getattr(err, "response", None)
    if isinstance(err, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    if isinstance(err, requests.Timeout):
        return "timed out"
    if isinstance(err, requests.ConnectionError):
        text = str(err).lower()
        return "connection refused" if "refused" in text else "connection failed (server unreachable or closed)"
    first = str(err).splitlines()[0] if str(err) else ""
    if "http" in first.lower():  # a message quoting a URL quotes UIDs
        first = first.split("http", 1)[0].strip(" :(")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def unreachable(err: BaseException) -> bool:
    """True for a failure of the server rather than of one request: nothing answers."""
    import requests

    return isinstance(err, requests.ConnectionError | requests.Timeout) and not isinstance(err, requests.HTTPError)


def auth_refused(err: BaseException) -> bool:
    response = getattr(err, "response", None)
    return response is not None and response.status_code in (401, 403)


def retryable(err: BaseException) -> bool:
    response = getattr(err, "response", None)
    return unreachable(err) or (response is not None and response.status_code in RETRY_STATUS)


def with_retries(call: Callable[[], T], attempts: int = 4, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried up to ``attempts`` times while it fails in a way worth retrying (connection,
    timeout, HTTP 408/429/5xx), waiting ``backoff * 2**k`` seconds (with jitter) in between."""
    for k in range(attempts):
        try:
            return call()
        except TRANSFER_ERRORS as err:  # requests' errors are OSErrors; decided by retryable()
            if k == attempts - 1 or not retryable(err):
                raise
            sleep(backoff * 2**k * (1 + 0.25 * random.random()))
    raise AssertionError("unreachable")


def check_server(client: Any, url: str) -> None:
    """One cheap QIDO-RS query, so that a wrong URL or refused credentials fail before any work.

    Raises:
        PacsError: names the server and what failed (with the credentials help for 401/403).
    """
    try:
        with_retries(lambda: client.search_for_studies(limit=1), attempts=2)
    except TRANSFER_ERRORS as err:
        hint = f"; {CREDENTIALS_HELP}" if auth_refused(err) else ""
        raise PacsError(f"DICOMweb server {mask_url(url)} did not answer a QIDO-RS study search: "
                        f"{describe_failure(err)}{hint}") from None
