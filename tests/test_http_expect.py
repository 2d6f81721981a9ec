"""``Expect: 100-continue`` (RFC 9110 section 10.1.1): an interim 100 when
the body will be read, the final answer at once when the head decides it,
417 for other expectations; over raw sockets and curl."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DEADLINE, run_client
from wsserver import Server
from wsserver.http import Request


def read_head(sock: socket.socket) -> bytes:
    """One response head, read byte by byte (so nothing after it is taken)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            return head
        head += byte
    return head


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while more := sock.recv(65536):
        data += more
    return data


def exchange(server: Server, talk: Callable[[socket.socket], object]) -> object:
    def client() -> object:
        with socket.create_connection(server.get_local_ip(), timeout=DEADLINE) as sock:
            return talk(sock)

    return run_client(server, client)


@pytest.fixture
def upload(server: Server) -> Server:
    server.http_server.route("/upload", methods=("POST",), handler=lambda request: f"{len(request.body)} bytes", max_body_size=8 * 1024 * 1024)
    return server


def post_head(path: str, length: int, expect: str = "100-continue") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\nExpect: {expect}\r\n\r\n".encode()


def test_the_body_is_invited_with_100_continue(upload: Server) -> None:
    def talk(sock: socket.socket) -> tuple[bytes, bytes]:
        sock.sendall(post_head("/upload", 5))
        interim = read_head(sock)  # the client waits for it before sending the body
        sock.sendall(b"hello")
        return interim, read_head(sock)

    interim, final = exchange(upload, talk)  # type: ignore[misc]
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "head, status",
    [
        (post_head("/nowhere", 5), b"404"),
        (b"PUT /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", b"405"),
        (post_head("/upload", 10**9), b"413"),
        (post_head("/upload", 5, expect="something-else"), b"417"),
    ],
    ids=["no-route", "wrong-method", "too-large", "unknown-expectation"],
)
def test_a_refusal_comes_at_once_without_the_body(upload: Server, head: bytes, status: bytes) -> None:
    def talk(sock: socket.socket) -> bytes:
        sock.sendall(head)
        return read_to_end(sock)  # the body is never sent; the server answers and closes

    answer = exchange(upload, talk)
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    assert b"100 Continue" not in answer


def test_a_body_sent_without_waiting_gets_no_interim_answer(upload: Server) -> None:
    def talk(sock: socket.socket) -> bytes:
        sock.sendall(post_head("/upload", 5) + b"hello")
        return read_head(sock)

    answer = exchange(upload, talk)
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_uploads_without_waiting_for_its_timeout(upload: Server, tmp_path: Path) -> None:
    """curl sends Expect: 100-continue for bodies over 1 MiB and, without the
    interim answer, waits its expect100-timeout (set to 30 s here, longer
    than the test's deadline) before sending the body."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * (3 * 1024 * 1024))
    url = upload.http_server.get_url("upload")
    argv = ["curl", "-sS", "--max-time", str(DEADLINE), "--expect100-timeout", "30", "--data-binary", f"@{payload}", "-w", " %{http_code}", str(url)]
    result = run_client(upload, lambda: subprocess.run(argv, capture_output=True, timeout=DEADLINE * 2))
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.stdout == b"3145728 bytes 200", result.stderr


def test_a_request_the_handler_sees_is_whole(upload: Server) -> None:
    seen: list[Request] = []
    upload.http_server.route("/seen", methods=("POST",), handler=lambda request: seen.append(request))

    def talk(sock: socket.socket) -> bytes:
        sock.sendall(post_head("/seen", 3))
        read_head(sock)
        sock.sendall(b"abc")
        return read_head(sock)

    exchange(upload, talk)
    assert [r.body for r in seen] == [b"abc"]
