"""Raw WebSocket client bits for tests that must send what no library would:
hand-built, masked client frames, and a bare socket handshake."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from collections.abc import Iterator

from wsserver.protocol import Connection, Event
from wsserver.protocol.frames import apply_mask


def receive(connection: Connection, data: bytes | bytearray | memoryview) -> list[Event]:
    """Feed ``data`` to a server-side :class:`Connection` and take every
    event it completes, as a driver that handles them all at once would."""
    connection.receive_data(data)
    return list(connection.events())


def client_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length: int | None = None,
) -> bytes:
    """A client-to-server frame. ``mask=None`` sends it unmasked (a protocol
    error); ``length`` overrides the announced payload length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = struct.pack("!BB", b0, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def handshake_request(path: str = "/", host: str = "localhost", key: str | None = None, extra: str = "") -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


@contextlib.contextmanager
def open_websocket(address: tuple, timeout: float = 10.0, extra: str = "") -> Iterator[socket.socket]:
    """A bare socket on which the opening handshake has succeeded (``extra``:
    more request header lines, each ending in CRLF)."""
    with socket.create_connection(address) as sock:
        sock.settimeout(timeout)
        sock.sendall(handshake_request(extra=extra))
        head = read_http_head(sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
        yield sock


def read_frame(sock: socket.socket) -> tuple[int, bool, bytes]:
    """Read one unmasked server frame: (opcode, fin, payload)."""
    b0, payload = read_raw_frame(sock)
    return b0 & 0x0F, bool(b0 & 0x80), payload


def read_raw_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Read one unmasked server frame: its first byte (FIN, RSV bits and
    opcode) and its payload."""
    b0, b1 = _exactly(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _exactly(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _exactly(sock, 8))
    return b0, _exactly(sock, n)


def read_http_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        data += chunk
    return data
