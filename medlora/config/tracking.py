"""The ``tracking:`` section: which MLflow store and experiment a run is logged to."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from .base import Strict, shown


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class TrackingConfig(Strict):
    """The MLflow store. A URI with a password is refused: the config is logged with every run."""

    uri: str | None = Field(
        None, description="MLflow tracking URI; a URI with a password is refused (the config is logged): "
        "credentials come from the environment or `~/.pgpass`",
        json_schema_extra=shown("`MLFLOW_TRACKING_URI`, else MLflow's default local store"))
    experiment: str | None = Field(None, description="MLflow experiment name",
                                   json_schema_extra=shown("the data card's name, else `data.name`"))

    @field_validator("uri")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        """The config is logged with every run: credentials come from the environment instead."""
        if v and urlsplit(v).password is not None:
            raise ValueError(f"{redact_uri(v)} holds a password, and the config is logged with every run; write "
                             "the URI without it and set PGPASSWORD or a ~/.pgpass line (a database) or "
                             "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (an MLflow server)")
        return v
