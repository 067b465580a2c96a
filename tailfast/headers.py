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


class QueryParams:
    """The parsed query string: case-sensitive, multi-valued, in the order sent.
    query["a"] is the first value of a (KeyError when absent), get_all("a") every one."""

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        index: dict[str, list[str]] = {}
        for name, value in pairs:
            index.setdefault(name, []).append(value)
        self._index = index

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name, ()))

    def __getitem__(self, name: str) -> str:
        return self._index[name][0]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeated names included."""
        return list(self._pairs)

    def keys(self) -> list[str]:
        return list(self._index)

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self._index.items()}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryParams):
            return self._pairs == other._pairs
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"QueryParams({self._pairs!r})"
