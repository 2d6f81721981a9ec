"""What a request body or its cookies carry: urlencoded forms (WHATWG URL
standard, ``application/x-www-form-urlencoded``), JSON bodies and the
``Cookie`` header (RFC 6265 section 5.4). Pure functions of bytes and
strings; a bad input raises :class:`~wsserver.http.request.HttpError` with
the status to answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from .errors import HttpError

__all__ = ["MultiValueDict", "FormData", "parse_form", "parse_json", "parse_cookies", "MAX_FORM_FIELDS"]

#: Most fields :func:`parse_form` takes from one body (413 beyond).
MAX_FORM_FIELDS = 1000


V = TypeVar("V")


class MultiValueDict(Mapping[str, V]):
    """Named values in the order they came, a name possibly repeated:
    ``d[name]`` is a name's last value (as ``request.query``);
    :meth:`get_all` gives every value."""

    __slots__ = ("_fields", "_last")

    def __init__(self, fields: list[tuple[str, V]]) -> None:
        self._fields = fields
        self._last = dict(fields)

    def __getitem__(self, name: str) -> V:
        return self._last[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def get_all(self, name: str) -> list[V]:
        """Every value of ``name``, in order (empty if there is none)."""
        return [value for key, value in self._fields if key == name]

    def items_all(self) -> list[tuple[str, V]]:
        """Every ``(name, value)`` pair, repeated names included, in order."""
        return list(self._fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields!r})"


class FormData(MultiValueDict[str]):
    """Form fields in the order they came. ``form[name]`` is a field's last
    value; :meth:`get_all` gives every value."""

    __slots__ = ()


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, lower-cased, without parameters."""
    return (content_type or "").partition(";")[0].strip().lower()


def parse_form(body: bytes, content_type: str | None, max_fields: int = MAX_FORM_FIELDS) -> FormData:
    """The fields of an ``application/x-www-form-urlencoded`` body (UTF-8).

    Raises HttpError: 400 for another content type or bytes that are not
    UTF-8 once percent-decoded, 413 for more than ``max_fields`` fields.
    """
    if media_type(content_type) != "application/x-www-form-urlencoded":
        raise HttpError(400, f"expected a form (application/x-www-form-urlencoded), got {content_type or 'no Content-Type'}")
    try:
        text = body.decode("ascii")  # percent-encoded: anything else is not a form
    except UnicodeDecodeError:
        raise HttpError(400, "a urlencoded form has only ASCII bytes") from None
    try:
        fields = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=max_fields, separator="&")
    except UnicodeDecodeError:
        raise HttpError(400, "a form field is not UTF-8") from None
    except ValueError:  # parse_qsl's "Max number of fields exceeded"
        raise HttpError(413, f"more than {max_fields} form fields") from None
    return FormData(fields)


def parse_json(body: bytes, content_type: str | None) -> Any:
    """The value of a JSON body. Raises HttpError 400 for another content
    type (``application/json`` or any ``+json`` type is expected) or a body
    that is not JSON (the message says where it fails)."""
    kind = media_type(content_type)
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise HttpError(400, f"expected JSON (application/json), got {content_type or 'no Content-Type'}")
    try:
        return json.loads(body)
    except RecursionError:
        raise HttpError(400, "the JSON body is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None


def parse_cookies(values: list[str]) -> dict[str, str]:
    """The cookies of ``Cookie`` header values (RFC 6265 section 5.4): the
    first of several with one name wins (the browser sends the most
    specific first); a pair without ``=`` is skipped; a value in double
    quotes loses them."""
    cookies: dict[str, str] = {}
    for value in values:
        for pair in value.split(";"):
            name, equals, cookie = pair.partition("=")
            name = name.strip()
            if not equals or not name:
                continue
            cookie = cookie.strip()
            if len(cookie) >= 2 and cookie[0] == cookie[-1] == '"':
                cookie = cookie[1:-1]
            cookies.setdefault(name, cookie)
    return cookies
