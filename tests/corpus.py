"""Loader for the request corpus in tests/http_corpus/ (format: tests/http_corpus/README.md)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "http_corpus"

# The limits every case assumes (the cases at a limit are written against these).
LIMIT_ARGS = [
    "--limit-request-line", "256",
    "--limit-request-fields", "20",
    "--limit-request-field-size", "256",
    "--limit-request-body", "4096",
]

_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt\\])")
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}


@dataclass
class Case:
    name: str  # "valid/get_minimal"
    description: str
    status: int
    data: bytes
    expect_json: dict[str, Any] | None = field(default=None)


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    return bytes([int(code[1:], 16)]) if code[:1] == b"x" else _SIMPLE[code]


def load_case(path: Path) -> Case:
    raw = path.read_bytes()
    header, sep, body = raw.partition(b"\n---\n")
    assert sep, f"{path}: no '---' line"
    description, status, expect_json = "", 0, None
    for line in header.decode("ascii").splitlines():
        assert line.startswith("#"), f"{path}: header line without '#': {line!r}"
        text = line[1:].strip()
        if text.startswith("expect-json:"):
            expect_json = json.loads(text.split(":", 1)[1])
        elif text.startswith("expect:"):
            status = int(text.split(":", 1)[1])
        elif not description:
            description = text
    # Raw control bytes and non-ASCII in the data section are refused: editors
    # and git mangle them, so every such byte is written as an escape.
    bad = [b for b in body if b != 0x0A and not 0x20 <= b < 0x7F]
    assert not bad, f"{path}: raw byte {bad[0]:#04x} in the data; write it as an escape"
    # File line breaks are layout only; the bytes are what the escapes say.
    data = _ESCAPE.sub(_unescape, body.replace(b"\n", b""))
    assert status, f"{path}: no '# expect:' line"
    assert data, f"{path}: no data"
    return Case(f"{path.parent.name}/{path.stem}", description, status, data, expect_json)


def load(kind: str) -> list[Case]:
    """Every case of one kind ("valid" or "invalid"), sorted by name."""
    return [load_case(p) for p in sorted((CORPUS / kind).glob("*.http"))]
