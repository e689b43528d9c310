"""What every config section shares: unknown keys are errors, a validated section is frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; a validated config is frozen (derived values go into a copy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def shown(default: str) -> dict[str, str]:
    """``json_schema_extra`` of a field whose default is decided at run time: what the reference
    table (:mod:`medlora.config.docs`) shows as its default instead of ``None``."""
    return {"shown_default": default}
