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

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]] | MutableMapping[str, str] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        # Lower-cased name -> its values in order: every lookup is one dict
        # access (a request's headers are looked up a dozen times).
        self._index: dict[str, list[str]] = {}
        pairs = items.items() if isinstance(items, MutableMapping) else items
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        key = name.lower()
        values = self._index.get(key)
        if values is None:
            self._index[key] = [value]
        else:
            values.append(value)

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        values = self._index.get(name.lower())
        if not values:
            raise KeyError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._index:
            self._remove(key)
        self.add(name, value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._index:
            raise KeyError(name)
        self._remove(key)

    def _remove(self, key: str) -> None:
        del self._index[key]
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for n, _ in self._items:
            key = n.lower()
            if key not in seen:
                seen.add(key)
                yield n

    def __len__(self) -> int:
        return len(self._index)

    def raw_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeats included, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
