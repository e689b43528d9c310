"""YAML front matter: a Markdown file that opens with a ``---`` line, a YAML mapping, and a closing
``---`` line, then prose. Data cards (:mod:`medlora.io.datacard`) and base cards
(:mod:`medlora.basecard`) are such files; this is the one place their YAML is read and written.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

FENCE = "---"


def split_front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    """(front-matter mapping, the prose after it) of ``text``.

    Raises:
        ConfigError: naming ``source`` (e.g. ``"data card data_cards/x.md"``) when the text does not open
            with a ``---`` line, the block has no closing ``---`` line, or it is not a YAML mapping.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise ConfigError(f"{source}: must start with a '---' line opening the YAML front matter")
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() == FENCE), None)
    if end is None:
        raise ConfigError(f"{source}: the front matter has no closing '---' line")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: front matter is not valid YAML: {err}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{source}: front matter must be a mapping of field: value")
    return meta, "\n".join(lines[end + 1 :])


def front_matter_or_empty(text: str) -> tuple[dict[str, Any], str]:
    """(front-matter mapping, prose) for display: ``({}, text)`` when ``text`` has no valid front matter."""
    try:
        return split_front_matter(text, "<text>")
    except ConfigError:
        return {}, text


def render_front_matter(record: dict[str, Any]) -> str:
    """The front matter block of ``record``, fences included (keys in their given order)."""
    return f"{FENCE}\n{yaml.safe_dump(record, sort_keys=False).rstrip()}\n{FENCE}"
