"""Request headers: case-insensitive, multi-valued, in the order received."""

from __future__ import annotations

from collections.abc import Iterator
from typing import overload


class Headers:
    """Read-only mapping view of header fields. Lookups ignore case; a name
    sent several times keeps every value (see get_all)."""

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        self._index: dict[str, list[str]] | None = None

    def _lookup(self) -> dict[str, list[str]]:
        if self._index is None:
            index: dict[str, list[str]] = {}
            for name, value in self._pairs:
                index.setdefault(name.lower(), []).append(value)
            self._index = index
        return self._index

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of name; several values are joined with ", " (RFC 9110 5.3)."""
        values = self._lookup().get(name.lower())
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every value sent for name, in order."""
        return list(self._lookup().get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[str]:
        """Names as sent (a repeated name appears once)."""
        seen: set[str] = set()
        for name, _ in self._pairs:
            key = name.lower()
            if key not in seen:
                seen.add(key)
                yield name

    def __len__(self) -> int:
        return len(self._lookup())

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair as received, repeated names included."""
        return list(self._pairs)

    def keys(self) -> list[str]:
        return list(self)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"
