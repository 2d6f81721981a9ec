"""A case-insensitive, order-keeping, multi-valued collection of HTTP headers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping

__all__ = ["Headers"]


class Headers(MutableMapping[str, str]):
    """HTTP headers: names compare case-insensitively, order and repeats are kept.

    ``headers[name]`` is the first value (``KeyError`` if absent); setting it
    replaces every value of that name; :meth:`add` appends one more;
    :meth:`get_all` returns all values of a name.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | MutableMapping[str, str] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        pairs = items.items() if isinstance(items, MutableMapping) else items
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self._items if n.lower() == key]

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        raise KeyError(name)

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        kept = [(n, v) for n, v in self._items if n.lower() != key]
        if len(kept) == len(self._items):
            raise KeyError(name)
        self._items = kept

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for n, _ in self._items:
            if n.lower() not in seen:
                seen.add(n.lower())
                yield n

    def __len__(self) -> int:
        return len({n.lower() for n, _ in self._items})

    def raw_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeats included, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
