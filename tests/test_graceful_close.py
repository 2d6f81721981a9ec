"""Graceful closes over real sockets: an answer reaches a client even when
the server stops reading it first, and a client that half-closes still gets
the whole of a streamed answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import DEADLINE, pump_until, run_client
from rawhttp import connect, read_response, request_bytes
from wsserver import Server
from wsserver.reactor import Reactor


def refused_upload(port: int, body_size: int) -> tuple[int, bytes]:
    """POST a body the server refuses on sight; return the status read back
    and what the connection gives after the answer."""
    with connect(port) as sock:
        sock.sendall(request_bytes("POST", "/upload", {"Content-Length": str(body_size)}) + bytes(body_size))
        stream = sock.makefile("rb")
        return read_response(stream).status, stream.read()


def test_an_error_answer_survives_a_request_body_left_unread() -> None:
    # The 413 is decided on the request head while megabytes of body are
    # still arriving. Closing with them unread would make the kernel answer
    # with a reset: the client's send fails and, on some systems, the 413 is
    # destroyed before it is read. The server drains the body instead, and
    # the connection ends with an orderly close.
    server = Server(max_body_size=1024)
    server.start("127.0.0.1", 0)
    try:
        assert run_client(server, refused_upload, server.get_local_ip()[1], 8 * 1024 * 1024) == (413, b"")
        # The socket lingered only until the client closed its end.
        pump_until(server, lambda: not server.reactor.lingering, what="the drained socket to close")
    finally:
        server.shutdown()


def test_a_lingering_socket_is_closed_after_the_linger_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Reactor, "LINGER", 0.2)
    server = Server(max_body_size=1024)
    server.start("127.0.0.1", 0)
    try:
        with connect(server.get_local_ip()[1]) as sock:
            # A client that sends a refused request and then neither reads
            # nor closes: the server must not keep its socket forever.
            sock.sendall(request_bytes("POST", "/upload", {"Content-Length": "100000"}) + bytes(1000))
            pump_until(server, lambda: server.reactor.lingering, what="the refusal")
            pump_until(server, lambda: not server.reactor.lingering, what="the linger time to end")
            assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    finally:
        server.shutdown()


def test_shutdown_closes_lingering_sockets() -> None:
    server = Server(max_body_size=10)
    server.start("127.0.0.1", 0)
    with connect(server.get_local_ip()[1]) as sock:
        sock.sendall(request_bytes("POST", "/upload", {"Content-Length": "100"}))
        pump_until(server, lambda: server.reactor.lingering)
        server.shutdown()
        assert not server.reactor.lingering


def test_a_half_closed_client_gets_the_whole_streamed_file(server: Server, tmp_path: Path) -> None:
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB: streamed in many slices
    (tmp_path / "big.bin").write_bytes(payload)
    server.http_server.root = tmp_path

    def client() -> tuple[int, int, bytes]:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(request_bytes("GET", "/big.bin"))
            sock.shutdown(socket.SHUT_WR)  # "that was my whole request"
            stream = sock.makefile("rb")
            response = read_response(stream)
            return response.status, len(response.body), stream.read()  # then the server closes

    status, length, after = run_client(server, client, timeout=DEADLINE)
    assert (status, length, after) == (200, len(payload), b"")
