"""The config reference table, generated from the schema's field descriptions.

``python -m medlora.config.docs`` prints the table; ``--write README.md`` replaces the README's
section between :data:`START` and :data:`END`; ``--check README.md`` exits 1 when it differs.
A key's meaning is written once, in its ``Field(description=...)``; this renders it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .schema import Config, sections

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
COMMAND = "python -m medlora.config.docs --write README.md"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def shown_default(info: FieldInfo) -> str:
    """A field's default as the table shows it (Markdown)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if info.is_required():
        return "(required)"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "—"  # a section: its keys follow
    if value is None:
        return "none"
    if isinstance(value, bool | int | float):
        return _value(value)
    return f"`{_value(value)}`"


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every field of ``model``, a section's row before its keys'."""
    out: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        key = prefix + name
        if not info.description:
            raise ValueError(f"config key {key} has no Field(description=...)")
        out.append((key, shown_default(info), info.description))
        for section in sections(info.annotation):
            out += rows(section, key + ".")
    return out


def render_table() -> str:
    """The Markdown table of every config key."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in rows():
        cells = (f"`{key}`", default, meaning)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def replace_section(text: str, table: str) -> str:
    """``text`` with the part between :data:`START` and :data:`END` replaced by ``table``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} line before one {END} line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medlora.config.docs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="README", help="replace the table in this file")
    group.add_argument("--check", type=Path, metavar="README", help="exit 1 when this file's table is stale")
    args = parser.parse_args(argv)
    table = render_table()
    if args.write is None and args.check is None:
        print(table)
        return 0
    path = args.write or args.check
    text = path.read_text(encoding="utf-8")
    new = replace_section(text, table)
    if args.check is not None:
        if new != text:
            print(f"{path}: the config reference differs from the schema; run: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
