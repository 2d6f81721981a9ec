"""Route paths with parameters: ``/files/{name}``, ``/items/{id:int}``,
``/docs/{rest:path}``. A pattern is compiled once, at registration; a
request path matches it whole, and the converted values reach the handler
as keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["PathPattern"]

# {name} or {name:kind}
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")

#: What each kind of parameter matches, and how its text is converted.
_KINDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),  # one segment (the default)
    "int": (r"[0-9]+", int),  # one segment of digits
    "path": (r".+", str),  # the rest of the path, slashes included
}


class PathPattern:
    """A route path with ``{name}``, ``{name:int}`` or ``{name:path}``
    parameters. Raises ``ValueError`` for an unknown kind or a repeated name."""

    __slots__ = ("path", "_regex", "_converters")

    def __init__(self, path: str) -> None:
        self.path = path
        self._converters: dict[str, Callable[[str], Any]] = {}
        parts: list[str] = []
        end = 0
        for match in _PARAMETER.finditer(path):
            name, kind = match.group(1), match.group(2) or "str"
            if kind not in _KINDS:
                raise ValueError(f"route {path!r}: unknown parameter kind {kind!r} (one of {', '.join(_KINDS)})")
            if name in self._converters:
                raise ValueError(f"route {path!r}: parameter {name!r} appears twice")
            regex, self._converters[name] = _KINDS[kind]
            parts.append(re.escape(path[end : match.start()]))
            parts.append(f"(?P<{name}>{regex})")
            end = match.end()
        parts.append(re.escape(path[end:]))
        self._regex = re.compile("".join(parts))

    @staticmethod
    def has_parameters(path: str) -> bool:
        return _PARAMETER.search(path) is not None

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted parameters if ``path`` matches, else None."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {name: self._converters[name](text) for name, text in found.groupdict().items()}
