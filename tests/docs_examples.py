"""The runnable examples of the docs: Python blocks marked ``<!-- runs in TEST_FILE -->``."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def docs_examples(page: str, marker: str) -> list[str]:
    """The Python blocks of ``docs/{page}`` that follow ``<!-- runs in {marker} -->``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    tag = f"<!-- runs in {marker} -->\n```python\n"
    blocks = []
    start = text.find(tag)
    while start != -1:
        body = start + len(tag)
        blocks.append(text[body : text.index("```", body)])
        start = text.find(tag, body)
    return blocks
