"""The opening handshake, server side (RFC 6455 section 4.2).

:func:`parse_upgrade` checks a parsed HTTP request and returns what the
client asked for; :func:`accept_headers` gives the headers of the 101 answer.
Turning headers into bytes is the HTTP layer's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "GUID",
    "HandshakeError",
    "UpgradeRequest",
    "HeaderLookup",
    "accept_key",
    "generate_key",
    "sha1_base64",
    "header_tokens",
    "is_upgrade_request",
    "parse_upgrade",
    "accept_headers",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HeaderLookup(Protocol):
    """What the handshake needs of a header collection."""

    def get_all(self, name: str) -> list[str]: ...


class HandshakeError(Exception):
    """The request cannot be upgraded; answer with ``status`` and this message.

    ``headers`` are extra response headers the answer must carry (426 names
    the supported version).
    """

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass
class UpgradeRequest:
    key: str
    #: The offered subprotocols, in the client's order of preference.
    subprotocols: list[str] = field(default_factory=list)
    origin: str | None = None


def sha1_base64(data: str | bytes) -> str:
    """SHA-1 of ``data`` (UTF-8 if text), Base64-encoded, as text."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key``."""
    return sha1_base64(key.strip() + GUID)


def generate_key() -> str:
    """A fresh random ``Sec-WebSocket-Key`` (16 random bytes, Base64)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def header_tokens(headers: HeaderLookup, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header, stripped, empty ones dropped."""
    return [t.strip() for value in headers.get_all(name) for t in value.split(",") if t.strip()]


def is_upgrade_request(headers: HeaderLookup) -> bool:
    """Whether the request asks to switch to WebSocket (``Upgrade: websocket``)."""
    return any(t.lower() == "websocket" for t in header_tokens(headers, "Upgrade"))


def _single(headers: HeaderLookup, name: str) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise HandshakeError(400, f"more than one {name} header")
    return values[0].strip() if values else None


def parse_upgrade(method: str, http_version: str, headers: HeaderLookup) -> UpgradeRequest:
    """Validate an upgrade request; raise :class:`HandshakeError` if it is not one
    that RFC 6455 allows a server to accept."""
    if method != "GET":
        raise HandshakeError(405, "WebSocket upgrade requires GET", [("Allow", "GET")])
    if http_version != "HTTP/1.1":
        raise HandshakeError(400, "WebSocket upgrade requires HTTP/1.1")
    if not headers.get_all("Host"):
        raise HandshakeError(400, "missing Host header")
    if not is_upgrade_request(headers):
        raise HandshakeError(400, "missing 'Upgrade: websocket'")
    if not any(t.lower() == "upgrade" for t in header_tokens(headers, "Connection")):
        raise HandshakeError(400, "missing 'Connection: Upgrade'")
    version = _single(headers, "Sec-WebSocket-Version")
    if version != "13":
        raise HandshakeError(
            426,
            f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13",
            [("Sec-WebSocket-Version", "13")],
        )
    key = _single(headers, "Sec-WebSocket-Key")
    if key is None:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in Base64")
    return UpgradeRequest(
        key=key,
        subprotocols=header_tokens(headers, "Sec-WebSocket-Protocol"),
        origin=_single(headers, "Origin"),
    )


def accept_headers(key: str, subprotocol: str | None = None, extensions: str | None = None) -> list[tuple[str, str]]:
    """The headers of the ``101 Switching Protocols`` answer."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers
