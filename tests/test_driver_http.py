"""HTTP/1.1 connections: keep-alive, pipelining, Connection: close,
HTTP/1.0, the Date and Server headers, every error status with its short
body, timeouts, and a client that sends its request one byte at a time."""

from __future__ import annotations

import collections
import http.client
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import DEADLINE, Worker, count_polls, pump_until, run_client
from rawhttp import connect, exchange, is_closed_by_peer, read_response, request_bytes
from wsserver import Server
from wsserver.drivers import HttpDriver
from wsserver.http import Response


@pytest.fixture
def routes(server: Server, tmp_path: Path) -> Server:
    (tmp_path / "file.bin").write_bytes(bytes(range(256)) * 2048)  # 512 KiB: several slices
    server.http_server.root = tmp_path
    server.http_server.route("/echo", methods=("POST",), handler=lambda request: request.body)
    server.http_server.route("/stream", handler=lambda request: Response(iter([b"a" * 100, b"b" * 100])))
    server.http_server.route("/hello", handler=lambda request: "hello")
    return server


def test_keep_alive_serves_many_requests_on_one_connection(routes: Server) -> None:
    port = routes.get_local_ip()[1]
    client_ports = set()
    routes.http_server.route("/whoami", handler=lambda request: client_ports.add(request.client_address[1]))

    def client() -> list[tuple[int, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        results = []
        requests = [
            ("GET", "/hello", None), ("POST", "/echo", b"x" * 1000), ("GET", "/file.bin", None), ("HEAD", "/file.bin", None),
            ("GET", "/stream", None), ("GET", "/missing", None), ("GET", "/whoami", None), ("GET", "/whoami", None),
        ]
        for method, path, body in requests:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            results.append((response.status, response.read()))
        conn.close()
        return results

    results = run_client(routes, client)
    assert [status for status, _ in results] == [200, 200, 200, 200, 200, 404, 204, 204]
    assert results[1][1] == b"x" * 1000 and len(results[2][1]) == 512 * 1024 and results[3][1] == b""
    assert results[4][1] == b"a" * 100 + b"b" * 100
    assert len(client_ports) == 1, "every request came on the same TCP connection"


def test_pipelined_requests_are_answered_in_order(routes: Server) -> None:
    port = routes.get_local_ip()[1]
    batch = b"".join(
        [
            request_bytes("GET", "/hello"),
            request_bytes("GET", "/file.bin"),  # streamed across several writes
            request_bytes("POST", "/echo", body=b"second"),
            request_bytes("GET", "/stream"),  # chunked
            request_bytes("HEAD", "/hello"),
            request_bytes("GET", "/hello", {"Connection": "close"}),
        ]
    )

    def client() -> tuple[list[Any], bool]:
        with connect(port) as sock:
            sock.sendall(batch)
            stream = sock.makefile("rb")
            answers = [read_response(stream, head_only=(i == 4)) for i in range(6)]
            return answers, stream.read(1) == b""

    answers, closed = run_client(routes, client)
    assert [a.status for a in answers] == [200] * 6
    assert answers[0].body == b"hello" and len(answers[1].body) == 512 * 1024
    assert answers[2].body == b"second" and answers[3].body == b"a" * 100 + b"b" * 100
    assert answers[4].headers["content-length"] == "5" and answers[5].headers["connection"] == "close"
    assert closed, "Connection: close ends the connection after the answer"


def test_date_and_server_headers(routes: Server) -> None:
    (response,) = run_client(routes, exchange, routes.get_local_ip()[1], request_bytes("GET", "/hello"))
    assert response.headers["server"] == "wsserver"
    assert response.headers["date"].endswith(" GMT") and len(response.headers["date"]) == 29


def test_http10_closes_unless_keep_alive_and_never_chunks(routes: Server) -> None:
    port = routes.get_local_ip()[1]

    def client() -> tuple[Any, bool, Any, Any, bool]:
        with connect(port) as sock:
            sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
            plain = read_response(sock.makefile("rb"))
            plain_closed = is_closed_by_peer(sock)
        with connect(port) as sock:
            sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            stream = sock.makefile("rb")
            kept = read_response(stream)
            streamed = read_response(stream)  # no chunked coding for 1.0: delimited by the close
            return plain, plain_closed, kept, streamed, is_closed_by_peer(sock)

    plain, plain_closed, kept, streamed, streamed_closed = run_client(routes, client)
    assert plain.body == b"hello" and plain.headers["connection"] == "close" and plain_closed
    assert kept.body == b"hello" and kept.headers["connection"] == "keep-alive"
    assert "transfer-encoding" not in streamed.headers and streamed.body == b"a" * 100 + b"b" * 100
    assert streamed_closed


ERRORS = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n", 413),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-Filler: y\r\n" * 200 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"z" * 70000 + b"\r\n\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"BREW /pot HTTP/1.1\r\nHost: localhost\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
]


@pytest.mark.parametrize("request_data, status", ERRORS)
def test_error_statuses_have_short_bodies(routes: Server, request_data: bytes, status: int) -> None:
    port = routes.get_local_ip()[1]

    def client() -> tuple[Any, bool]:
        with connect(port) as sock:
            sock.sendall(request_data)
            response = read_response(sock.makefile("rb"))
            return response, status == 501 or is_closed_by_peer(sock)

    response, closed = run_client(routes, client)
    assert response.status == status
    assert response.body.startswith(f"{status} ".encode()) and len(response.body) < 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert closed, "a request the server could not read ends the connection"


def test_a_partial_request_times_out_with_408() -> None:
    server = Server(handshake_timeout=0.3)
    server.start("127.0.0.1", 0)
    try:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")  # never finished
            sock.setblocking(False)
            received = bytearray()

            def answered() -> bool:
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    return False
                received.extend(chunk)
                return not chunk  # the server closes after the 408

            pump_until(server, answered, what="408 and close")
    finally:
        server.stop()
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close\r\n" in received


def test_an_idle_kept_alive_connection_is_closed_quietly() -> None:
    server = Server(keepalive_timeout=0.3)
    server.start("127.0.0.1", 0)
    server.http_server.route("/", handler=lambda request: "ok")
    try:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(request_bytes("GET", "/"))
            sock.setblocking(False)
            received = bytearray()

            def closed() -> bool:
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    return False
                received.extend(chunk)
                return not chunk

            pump_until(server, closed, what="keep-alive timeout")
    finally:
        server.stop()
    assert received.count(b"HTTP/1.1 ") == 1 and received.endswith(b"ok")  # no 408 for an idle connection


def test_headers_one_byte_at_a_time(routes: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte arrives in its own read and the request is still whole."""
    reads: list[int] = []
    original = HttpDriver.data_received

    def counting(peer: Any, data: memoryview) -> None:
        reads.append(len(data))
        original(peer, data)

    monkeypatch.setattr(HttpDriver, "data_received", counting)
    request = request_bytes("POST", "/echo", {"X-Slow": "yes"}, body=b"slowly")
    with connect(routes.get_local_ip()[1]) as sock:
        for i in range(len(request)):
            sock.sendall(request[i : i + 1])
            pump_until(routes, lambda: len(reads) == i + 1, what=f"byte {i}")  # noqa: B023  (pump_until calls it before the loop moves on)
        reader = Worker(read_response, sock.makefile("rb"))
        reader.start()
        pump_until(routes, lambda: not reader.is_alive(), what="the answer")
        response = reader.outcome()
    assert reads == [1] * len(request)
    assert (response.status, response.body) == (200, b"slowly")


def test_the_server_answers_an_http_client_while_it_has_websocket_clients(routes: Server) -> None:
    from websockets.sync.client import connect as ws_connect

    routes.on_message = lambda client, message: client.send(message.data)
    port = routes.get_local_ip()[1]

    def client() -> tuple[str, int]:
        with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("first")
            echoed = ws.recv(timeout=DEADLINE)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            conn.request("GET", "/hello")
            status = conn.getresponse().status
            conn.close()
            return echoed, status

    assert run_client(routes, client) == ("first", 200)
    pump_until(routes, lambda: routes.client_count() == 0)



def test_pipelining_during_an_endless_answer_is_not_read_without_bound(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """While an event stream is open the client keeps sending requests: the
    server stops reading once a request's worth is waiting, the kernel's
    buffers fill, and the client's sends block; nothing grows in the server."""
    from wsserver.http.sse import EventStream

    streams: list[EventStream] = []
    server.http_server.route("/events", handler=lambda request: streams.append(EventStream()) or streams[-1])
    received: list[int] = []
    original = HttpDriver.data_received

    def counting(peer: Any, data: memoryview) -> None:
        received.append(len(data))
        original(peer, data)

    monkeypatch.setattr(HttpDriver, "data_received", counting)
    flood = request_bytes("GET", "/hello") * 4096
    with connect(server.get_local_ip()[1]) as sock:
        sock.sendall(request_bytes("GET", "/events"))
        pump_until(server, lambda: len(streams) == 1)
        sock.setblocking(False)
        sent = 0
        for _ in range(10_000):  # bounded: the kernel buffers are a few MiB
            try:
                sent += sock.send(flood)
            except BlockingIOError:
                # Full: give the server a few steps to read more, if it would.
                for _ in range(5):
                    server.poll(0)
                try:
                    sent += sock.send(flood)
                except BlockingIOError:
                    break
            server.poll(0)
        else:
            pytest.fail("the server kept reading")
        limit = 8 * 1024 + server.max_header_bytes + server.reactor.read_size
        assert sum(received) - len(request_bytes("GET", "/events")) <= limit < sent
        assert streams[0].send("still streaming")


def test_ten_thousand_pipelined_requests_are_answered_in_order_a_turn_at_a_time(routes: Server) -> None:
    """One segment after another of pipelined GETs: every one is answered,
    in order, and no poll() step answers more than REQUESTS_PER_TURN of them
    (they are served in a loop, a turn at a time, never by recursion)."""
    from wsserver.drivers.http import REQUESTS_PER_TURN

    polls = count_polls(routes)
    answered_in_step: list[int] = []

    def numbered(request: Any) -> str:
        answered_in_step.append(len(polls))
        return request.query.get("n", "")

    routes.http_server.route("/n", handler=numbered)
    count = 10_000

    def client() -> list[bytes]:
        with connect(routes.get_local_ip()[1]) as sock:
            sock.sendall(b"".join(request_bytes("GET", f"/n?n={n}") for n in range(count)))
            stream = sock.makefile("rb")
            return [read_response(stream).body for _ in range(count)]

    bodies = run_client(routes, client, timeout=60)
    assert bodies == [str(n).encode() for n in range(count)]
    per_step = collections.Counter(answered_in_step)
    assert max(per_step.values()) <= REQUESTS_PER_TURN, per_step.most_common(3)


def test_pipelined_requests_before_a_half_close_are_all_answered(tmp_path: Path) -> None:
    """A client that pipelines requests for files and then shuts down its
    sending side gets every answer: the end of its input does not cut the
    requests still waiting behind a streamed answer."""
    (tmp_path / "page.html").write_text("<!doctype html><p>page</p>\n")
    server = Server(root=tmp_path)
    server.start("127.0.0.1", 0)
    count = 40  # more than a turn's worth, each answer a streamed file

    def client() -> bytes:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(b"GET /page.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * count)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    try:
        assert run_client(server, client).count(b"HTTP/1.1 200 OK") == count
    finally:
        server.shutdown()
