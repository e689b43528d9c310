"""The tracking store as something that can go away: clear messages when it does not answer.

A team store is an ``http(s)://`` MLflow server (``deploy/``) or, for the server itself, a database
URI such as ``postgresql://user@host:5432/mlflow``. Credentials never sit in the URI of a config
(the config is logged, :class:`medlora.config.TrackingConfig` refuses them): PostgreSQL reads
``PGPASSWORD`` or ``~/.pgpass``, an MLflow server ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``.
Every message here shows the URI with any password masked.
"""

from __future__ import annotations

import re

from ..config import redact_uri
from ..errors import TrackingUnavailableError

# what a store that is down, unreachable or refusing the credentials says, through MLflow, requests or libpq
_UNREACHABLE = re.compile(r"Max retries exceeded|Connection refused|Failed to establish a new connection|"
                          r"Connection aborted|RemoteDisconnected|timed out|could not connect to server|"
                          r"connection to server at .* failed|password authentication failed|"
                          r"no password supplied|server closed the connection", re.IGNORECASE)
_AUTH = re.compile(r"password authentication failed for user \"?[^\"\s]*\"?|no password supplied", re.IGNORECASE)


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def unreachable_message(err: BaseException, uri: str | None = None) -> str | None:
    """A one-paragraph message when ``err`` (or what caused it) says the tracking store did not
    answer or refused the credentials; ``None`` for any other error. No password is shown."""
    texts = [str(e) for e in _chain(err)]
    if not any(_UNREACHABLE.search(t) for t in texts):
        return None
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    shown = redact_uri(uri)
    auth = next((m.group(0) for t in texts if (m := _AUTH.search(t))), None)
    if auth:
        return (f"the tracking store {shown} refused the credentials ({auth}); set PGPASSWORD or a ~/.pgpass line "
                "for a database, MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD for an MLflow server")
    return (f"the tracking store {shown} did not answer; what finished before is kept there. Rerun the same "
            "command once it answers again: a sweep resumes where it stopped, finished points are not trained again "
            "(set MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT to wait longer or shorter)")


DATABASES = ("postgresql", "mysql", "mssql")


def check_store(uri: str | None, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, with :func:`unreachable_message`, when the store at ``uri``
    does not answer or refuses the credentials. MLflow itself retries a database for minutes and an
    HTTP server for about two (7 retries); a local store (``sqlite:``, a folder) is not checked."""
    if not uri:
        return
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if scheme in DATABASES:
            import sqlalchemy

            args = {"connect_timeout": int(timeout)} if scheme in ("postgresql", "mysql") else {}
            engine = sqlalchemy.create_engine(uri, connect_args=args)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        elif scheme in ("http", "https"):
            import urllib.request

            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                pass
    except Exception as err:  # noqa: BLE001 - turned into a project error below when it is about the store
        message = unreachable_message(err, uri)
        if message is None and scheme in ("http", "https"):
            message = unreachable_message(ConnectionError(f"Connection refused: {err}"), uri)
        if message is None:
            raise
        raise TrackingUnavailableError(message) from None
