"""One front-matter reader for data cards, base cards and the report's data-card table."""

import pytest

from medlora.errors import ConfigError
from medlora.frontmatter import front_matter_or_empty, render_front_matter, split_front_matter


def test_a_record_written_is_read_back_with_the_prose_after_it():
    record = {"weights": "base.safetensors", "timm_kwargs": {"depth": 2}, "b": [1, 2]}
    meta, body = split_front_matter(render_front_matter(record) + "\n\n# Title\n", "card x.md")
    assert meta == record and list(meta) == list(record) and body == "\n# Title"


@pytest.mark.parametrize("text, message", [
    ("no fence\n", "card x.md: must start with a '---' line"),
    ("---\na: 1\n", "card x.md: the front matter has no closing '---' line"),
    ("---\na: [1\n---\n", "card x.md: front matter is not valid YAML"),
    ("---\n- a\n---\n", "card x.md: front matter must be a mapping"),
])
def test_a_broken_block_names_the_source(text, message):
    with pytest.raises(ConfigError, match=message):
        split_front_matter(text, "card x.md")
    assert front_matter_or_empty(text) == ({}, text)  # for display: shown as prose
