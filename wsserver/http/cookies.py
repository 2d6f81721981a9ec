"""Cookies a response sets (RFC 6265 section 4.1), with the safe defaults
for a server that every web page on the machine can reach: ``HttpOnly``
(no script reads them), ``SameSite=Lax`` (no foreign page's POST or
fetch carries them) and ``Secure`` whenever the server speaks TLS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .response import http_date

__all__ = ["Cookie", "SAMESITE_VALUES"]

SAMESITE_VALUES = frozenset({"Strict", "Lax", "None"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# cookie-octet: visible ASCII but DQUOTE, comma, semicolon and backslash.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# Path and Domain: no CTL and no semicolon (they would end the attribute).
_ATTRIBUTE = re.compile(r"[^\x00-\x1f\x7f;]*")


@dataclass(frozen=True)
class Cookie:
    """One ``Set-Cookie``. Raises ``ValueError`` when built with a name
    that is not a token, a value with characters a cookie cannot carry
    (encode it first: base64url, or percent-encoding), a bad attribute, or
    ``SameSite=None`` with ``secure=False`` (browsers drop such cookies)."""

    name: str
    value: str = ""
    #: Seconds until it expires; None for a cookie that ends with the browser session, 0 to delete it.
    max_age: int | None = None
    path: str | None = "/"
    domain: str | None = None
    #: ``Secure``: True, False, or None for "when the server speaks TLS".
    secure: bool | None = None
    httponly: bool = True
    samesite: str | None = "Lax"

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name):
            raise ValueError(f"a cookie's name is a token, not {self.name!r}")
        if not _COOKIE_VALUE.fullmatch(self.value):
            raise ValueError(f"cookie {self.name!r}: its value has a character a cookie cannot carry (space, quote, comma, semicolon, backslash or non-ASCII): encode it")
        for attribute in (self.path, self.domain):
            if attribute is not None and not _ATTRIBUTE.fullmatch(attribute):
                raise ValueError(f"cookie {self.name!r}: {attribute!r} has a control character or a semicolon")
        if self.samesite is not None and self.samesite not in SAMESITE_VALUES:
            raise ValueError(f"SameSite is one of {sorted(SAMESITE_VALUES)} or None, not {self.samesite!r}")
        if self.samesite == "None" and self.secure is False:
            raise ValueError("SameSite=None needs Secure: browsers drop the cookie otherwise")

    def header_value(self, tls: bool) -> str:
        """The ``Set-Cookie`` value, ``Secure`` decided by ``tls`` when :attr:`secure` is None."""
        parts = [f"{self.name}={self.value}"]
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
            if self.max_age <= 0:
                parts.append(f"Expires={http_date(0)}")  # for clients that know only Expires
        if self.path is not None:
            parts.append(f"Path={self.path}")
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        if self.secure or (self.secure is None and (tls or self.samesite == "None")):
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        if self.samesite is not None:
            parts.append(f"SameSite={self.samesite}")
        return "; ".join(parts)
