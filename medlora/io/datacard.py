"""Data cards: ``data_cards/*.md`` files of YAML front matter (between ``---`` lines) and prose.

The front matter is validated into a frozen :class:`DataCard`. Every field of :data:`REQUIRED_FIELDS`
must be present and non-empty; any other key is an error listing the allowed ones. ``classes`` are
the class names in label-index order (label 0 first) and ``abnormal_class`` is the positive class
of abnormality detection.

Datasets without task labels (test files used only to exercise readers) set the optional
``task: none``; their ``classes`` must then be ``[]`` and ``abnormal_class`` null, and such a card
cannot back a training run. The default is ``task: classification`` (binary: ``abnormal_class`` against
the rest); ``task: multiclass`` and ``task: multilabel`` (``classes`` are then the findings) go with
``data.task`` of the same name and have ``abnormal_class: null``.

A run validates ``data.card`` before ingest (:func:`card_for_run`), checks that the card agrees with
``data.classes``/``data.abnormal``, and logs the card's text with the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..config import DataConfig
from ..errors import ConfigError
from ..frontmatter import split_front_matter

log = logging.getLogger(__name__)

REQUIRED_FIELDS = (
    "name", "version", "description", "modality", "source", "citation", "licence", "obtain",
    "label_definition", "classes", "abnormal_class", "patient_key", "phi", "intended_use", "limitations",
    "format",
)  # fmt: skip
OPTIONAL_FIELDS = ("task",)


class _CardModel(BaseModel):
    """The front matter's schema (pydantic, frozen, unknown keys forbidden)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    description: str
    modality: str
    source: str
    citation: str
    licence: str
    obtain: str
    label_definition: str
    classes: list[str]
    abnormal_class: str | None
    patient_key: str
    phi: str
    intended_use: str
    limitations: str | list[str]
    format: str
    task: Literal["classification", "multiclass", "multilabel", "none"] = "classification"

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @field_validator(
        "name", "version", "description", "modality", "source", "citation", "licence", "obtain",
        "label_definition", "patient_key", "phi", "intended_use", "format",
    )  # fmt: skip
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("limitations")
    @classmethod
    def _limitations_given(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items or not all(i.strip() for i in items):
            raise ValueError("must name at least one known limitation")
        return v

    @model_validator(mode="after")
    def _classes_agree(self) -> _CardModel:
        if self.task == "none":
            if self.classes or self.abnormal_class is not None:
                raise ValueError("task: none means no labels: give classes: [] and abnormal_class: null")
            return self
        if self.task == "multilabel" and len(self.classes) == 1:
            return self
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must hold at least two distinct names, got {self.classes}")
        if self.task == "multilabel" and len(self.classes) == 1:
            return self  # a single finding is a multi-label set too; abnormal_class is not used
        if self.task == "classification" and self.abnormal_class not in self.classes:
            raise ValueError(f"abnormal_class={self.abnormal_class!r} is not one of classes={self.classes}")
        if self.task != "classification" and self.abnormal_class is not None:
            raise ValueError(f"task: {self.task} has no single abnormal class: give abnormal_class: null")
        return self


class DataCard(_CardModel):
    """A validated data card: the front-matter fields, plus the file it came from and its full text."""

    path: Path
    text: str

    @property
    def abnormal_index(self) -> int:
        """Label index of the abnormal (positive) class."""
        if self.abnormal_class is None:
            raise ConfigError(f"data card {self.path}: task: none has no abnormal class")
        return self.classes.index(self.abnormal_class)


def _format_error(err: ValidationError, path: Path) -> str:
    allowed = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
    lines = [f"invalid data card {path}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown field {field!r}; allowed fields: {allowed}")
        elif e["type"] == "missing":
            lines.append(f"  missing required field {field!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  field {field or '<card>'!s}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_card(path: str | Path) -> DataCard:
    """Read and validate one data card.

    Raises:
        ConfigError: the file is missing, has no front matter, or a field is missing, unknown, empty
            or inconsistent (``abnormal_class`` not in ``classes``); the message names the file and field.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data card {path} does not exist")
    text = path.read_text(encoding="utf-8")
    meta, _ = split_front_matter(text, f"data card {path}")
    for reserved in ("path", "text"):
        if reserved in meta:
            allowed = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
            raise ConfigError(f"invalid data card {path}:\n  unknown field {reserved!r}; allowed fields: {allowed}")
    try:
        return DataCard.model_validate({**meta, "path": path, "text": text})
    except ValidationError as err:
        raise ConfigError(_format_error(err, path)) from None


def check_card_matches(card: DataCard, data: DataConfig) -> None:
    """The card and the run's ``data`` section must name the same classes, in order, and abnormal class."""
    if card.task == "none":
        raise ConfigError(f"data card {card.path} says task: none (no task labels); it cannot back a training run")
    expected = {"classification": "binary", "multiclass": "multiclass", "multilabel": "multilabel"}[card.task]
    if expected != data.task:
        raise ConfigError(f"data card {card.path} has task: {card.task} but data.task={data.task}")
    if data.task == "multilabel":
        if list(card.classes) != list(data.findings or []):
            raise ConfigError(f"data card {card.path} lists findings (classes) {card.classes} but data.findings="
                              f"{data.findings}; they must be the same names in the same order")
        return
    if list(card.classes) != list(data.classes):
        raise ConfigError(
            f"data card {card.path} has classes={card.classes} but data.classes={data.classes}; "
            "they must be the same names in the same (label-index) order"
        )
    if data.task == "binary" and card.abnormal_class != data.abnormal:
        raise ConfigError(
            f"data card {card.path} has abnormal_class={card.abnormal_class!r} but data.abnormal={data.abnormal!r}"
        )


def card_for_run(data: DataConfig) -> DataCard | None:
    """Validate ``data.card`` (if set) and check it against the config; None when no card is configured."""
    if data.card is None:
        log.warning("data.card is not set: the run is not tied to a data card")
        return None
    card = load_card(data.card)
    check_card_matches(card, data)
    log.info("data card %s version %s (%s)", card.name, card.version, card.path)
    return card
