"""A bare HTTP/1.1 client over a socket, for tests that must send what
http.client would tidy up (hostile paths, pipelined requests, bytes one at
a time) and read exactly what the server answered."""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass, field
from typing import BinaryIO

from conftest import DEADLINE, run_client
from wsserver import Server


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    raw_head: bytes = b""


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_response(stream: BinaryIO, head_only: bool = False) -> RawResponse:
    """Read one response; ``head_only`` for the answer to a HEAD request."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    raw = [status_line]
    _, status, reason = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        raw.append(line)
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    response = RawResponse(int(status), reason, headers, b"", b"".join(raw))
    if head_only or response.status in (204, 304) or response.status < 200:
        return response
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int(stream.readline().split(b";")[0], 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b""):
                    pass
                break
            parts.append(stream.read(size))
            stream.readline()
        response.body = b"".join(parts)
    elif "content-length" in headers:
        response.body = stream.read(int(headers["content-length"]))
    else:
        response.body = stream.read()  # delimited by the close
    return response


def exchange(port: int, data: bytes, count: int = 1, head_only: bool = False) -> list[RawResponse]:
    """Send ``data`` on a new connection and read ``count`` responses."""
    with connect(port) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        return [read_response(stream, head_only) for _ in range(count)]


def is_closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed the connection (reads EOF, or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def fetch(
    server: Server, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with ``http.client`` while this thread pumps ``server``:
    (status, headers, body)."""
    port = server.get_local_ip()[1]

    def client() -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    return run_client(server, client)
