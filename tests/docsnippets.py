"""Code blocks of docs/*.md marked `<!-- snippet: NAME -->`, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def snippet(name: str, doc: str = "deployment.md") -> str:
    """The fenced code block right after the marker of that name."""
    text = (DOCS / doc).read_text()
    match = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\s*```[\w-]*\n(.*?)\n```", text, re.DOTALL
    )
    if match is None:
        raise AssertionError(f"no snippet {name!r} in docs/{doc}")
    return match.group(1)
