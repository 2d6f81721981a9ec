"""A case-insensitive, order-keeping, multi-valued collection of HTTP headers."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, MutableMapping

__all__ = ["Headers"]


class Headers(MutableMapping[str, str]):
    """HTTP headers: names compare case-insensitively, order and repeats are kept.

    ``headers[name]`` is the first value (``KeyError`` if absent); setting it
    replaces every value of that name; :meth:`add` appends one more;
    :meth:`get_all` returns all values of a name.
    """

    __slots__ = ("_items", "_first", "_repeated")

    def __init__(self, items: Iterable[tuple[str, str]] | MutableMapping[str, str] = ()) -> None:
        # Names and values alternately, in order (no tuple per header: a
        # request's headers live as long as its WebSocket connection).
        self._items: list[str] = []
        # Lower-cased name -> its first value, so that a lookup is one dict
        # access (an upgrade request's headers are looked up a dozen times);
        # the names that occur more than once are looked up in _items. The
        # lower-cased names are interned: every connection shares them.
        self._first: dict[str, str] = {}
        self._repeated: set[str] | None = None
        pairs = items.items() if isinstance(items, MutableMapping) else items
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items += (name, value)
        key = sys.intern(name.lower())
        if key not in self._first:
            self._first[key] = value
        elif self._repeated is None:
            self._repeated = {key}
        else:
            self._repeated.add(key)

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        if key not in self._first:
            return []
        if self._repeated is None or key not in self._repeated:
            return [self._first[key]]
        items = self._items
        return [items[i + 1] for i in range(0, len(items), 2) if items[i].lower() == key]

    def __getitem__(self, name: str) -> str:
        try:
            return self._first[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._first:
            self._remove(key)
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._first:
            raise KeyError(name)
        self._remove(key)

    def _remove(self, key: str) -> None:
        del self._first[key]
        if self._repeated is not None:
            self._repeated.discard(key)
        items = self._items
        self._items = [x for i in range(0, len(items), 2) if items[i].lower() != key for x in items[i : i + 2]]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for n in self._items[::2]:
            key = n.lower()
            if key not in seen:
                seen.add(key)
                yield n

    def __len__(self) -> int:
        return len(self._first)

    def raw_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeats included, in order."""
        items = self._items
        return list(zip(items[::2], items[1::2]))

    def __repr__(self) -> str:
        return f"Headers({self.raw_items()!r})"
