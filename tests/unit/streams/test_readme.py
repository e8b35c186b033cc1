"""The README documents every setting exactly as the code defines it."""

from __future__ import annotations

from pathlib import Path

from streams.settings import settings_table_markdown

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_settings_table_is_current():
    table = settings_table_markdown().strip()
    assert table in README.read_text(encoding="utf-8"), (
        "README.md's settings table is stale: paste the output of `recstream config --markdown`"
    )
