"""The README's config reference is generated from the schema's field descriptions."""

from pathlib import Path

import pytest

from medlora.config import Config
from medlora.config.docs import COMMAND, END, START, main, render_table, replace_section, rows
from medlora.config.schema import sections

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_config_reference_is_the_generated_table():
    text = README.read_text(encoding="utf-8")
    assert replace_section(text, render_table()) == text, (
        f"README.md's config reference differs from the schema's descriptions; regenerate it: {COMMAND}")


def _leaf_keys(model=Config, prefix=""):
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        for section in sections(info.annotation):
            keys += _leaf_keys(section, f"{prefix}{name}.")
    return keys


def test_every_key_has_a_row_with_a_meaning():
    table = {key: (default, meaning) for key, default, meaning in rows()}
    assert list(table) == _leaf_keys()
    assert all(default and meaning for default, meaning in table.values())
    assert table["train.lr"][0] == "0.001" and table["pretrain.lr"][0] == "0.0005"
    assert table["data.root"][0] == "(required)" and table["fewshot"][0] == "none"
    assert table["data.labels"][0] == "`<root>/labels.csv`"  # a default decided at run time, shown as such


def test_a_pipe_in_a_meaning_does_not_split_the_cell():
    line = next(row for row in render_table().splitlines() if row.startswith("| `data.findings` |"))
    assert "(`\\|`-separated)" in line and line.count(" | ") == 2


def test_write_replaces_only_the_marked_section_and_check_reports_drift(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{START}\n| stale |\n{END}\n\nafter\n")
    assert main(["--check", str(readme)]) == 1
    assert COMMAND in capsys.readouterr().err
    assert main(["--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "| stale |" not in text
    assert main(["--check", str(readme)]) == 0


def test_the_markers_must_be_there_once():
    with pytest.raises(ValueError, match="config-reference:start"):
        replace_section("no markers", "| table |")
