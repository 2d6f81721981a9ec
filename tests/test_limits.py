"""Every limit of ``Server(...)``: its default, and what a peer that goes
beyond it gets, over real sockets; the README's Limits table lists them all."""

from __future__ import annotations

import http.client
import inspect
import json
import pathlib
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from conftest import pump_until, run_client
from rawws import handshake_request, read_http_head
from swarm import Harness
from wsserver import Server
from wsserver.server import SELECT_MAX_CONNECTIONS

#: Every limit option and its default; the README table must say the same.
DEFAULTS = {
    "max_message_size": 16 * 1024 * 1024,
    "max_request_line": 8 * 1024,
    "max_header_bytes": 64 * 1024,
    "max_header_count": 100,
    "max_body_size": 1024 * 1024,
    "handshake_timeout": 10.0,
    "keepalive_timeout": 15.0,
    "close_timeout": 10.0,
    "max_connections": 1024,
    "write_limit": 4 * 1024 * 1024,
    "write_grace": 10.0,
    "heartbeat_interval": 20.0,
    "heartbeat_timeout": 20.0,
    "origins": None,
}

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_are_the_documented_ones(monkeypatch):
    monkeypatch.delenv("WSSERVER_POLLER", raising=False)
    parameters = inspect.signature(Server).parameters
    # max_connections' default depends on the platform's poller (None: 1024,
    # or what select() can take on Windows).
    assert {name: parameters[name].default for name in DEFAULTS} == dict(DEFAULTS, max_connections=None)
    server = Server()
    assert {name: getattr(server, name) for name in DEFAULTS} == DEFAULTS


def test_the_readme_table_lists_every_limit():
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE))
    assert set(DEFAULTS) <= set(rows), set(DEFAULTS) - set(rows)


def raw_request(h: Harness, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; return everything the server answers before closing."""
    with socket.create_connection(h.address) as sock:
        sock.sendall(data)
        return h.read_until_closed(sock)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


# -- WebSocket messages ------------------------------------------------------


def test_max_message_size(harness):
    h = harness(max_message_size=1000)

    def talk():
        with connect(h.url, max_size=None) as ws:
            ws.send("a" * 1000)
            assert ws.recv(timeout=5) == "a" * 1000
            ws.send(b"b" * 1001)
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            return closed.value.rcvd.code

    assert run_client(h.server, talk) == 1009
    h.finish()


# -- HTTP requests -------------------------------------------------------------


@pytest.mark.parametrize(("option", "request_bytes", "status"), [
    ({"max_request_line": 1024}, b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    ({}, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
    ({"max_header_bytes": 1024}, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 1100 + b"\r\n\r\n", 431),
    ({}, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
    ({"max_header_count": 10}, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10)) + b"\r\n", 431),
    ({}, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(100)) + b"\r\n", 431),
    ({"max_body_size": 1000}, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n\r\n", 413),
], ids=["request-line", "request-line-default", "header-bytes", "header-bytes-default", "header-count", "header-count-default", "body"])
def test_http_request_limits(harness, option, request_bytes, status):
    h = harness(**option)
    assert status_of(raw_request(h, request_bytes)) == status
    h.keeps_working()
    h.finish()


@pytest.mark.parametrize(("option", "request_bytes"), [
    ({"max_request_line": 1024}, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    ({"max_header_count": 10}, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(8)) + b"\r\n"),
], ids=["request-line", "header-count"])
def test_http_request_just_under_the_limit_is_served(harness, option, request_bytes):
    h = harness(**option)
    assert status_of(raw_request(h, request_bytes)) == 404  # served: there is no such route
    h.finish()


def test_handshake_timeout_drops_a_silent_connection(harness):
    h = harness(handshake_timeout=0.3)
    started = h.server.reactor.time()
    assert raw_request(h, b"") == b""
    assert h.server.reactor.time() - started >= 0.3
    h.finish()


def test_handshake_timeout_is_not_reset_by_a_trickle_of_bytes(harness):
    """Headers sent one byte at a time get 408 once handshake_timeout has
    passed since the connection was accepted, however steadily they come."""
    h = harness(handshake_timeout=0.5)
    request = handshake_request()
    sock = socket.create_connection(h.address)
    sock.setblocking(False)
    clock = h.server.reactor.time
    started = clock()
    state = {"sent": 0, "next": started, "got": bytearray(), "eof": False, "cut_off": False}

    def trickle() -> bool:
        if not state["cut_off"] and state["sent"] < len(request) and clock() >= state["next"]:
            try:
                sock.send(request[state["sent"] : state["sent"] + 1])
                state["sent"] += 1
            except OSError:
                state["cut_off"] = True  # the server closed first
            state["next"] = clock() + 0.05
        try:
            while chunk := sock.recv(4096):
                state["got"] += chunk
            state["eof"] = True
        except BlockingIOError:
            pass
        except ConnectionResetError:  # a byte crossed the server's close
            state["eof"] = True
        return state["eof"]

    h.pump(trickle, what="trickling client dropped")
    sock.close()
    assert status_of(bytes(state["got"])) == 408
    assert 0.5 <= clock() - started < 1.5
    assert state["sent"] < len(request)
    h.finish()


def test_keepalive_timeout_closes_an_idle_http_connection(harness):
    h = harness(handshake_timeout=5.0, keepalive_timeout=0.3)
    h.server.http_server.route("/ok", handler=lambda request: "ok")
    conn = http.client.HTTPConnection(*h.address, timeout=5)

    def get():
        conn.request("GET", "/ok")
        response = conn.getresponse()
        return response.status, response.read()

    started = h.server.reactor.time()
    assert run_client(h.server, get) == (200, b"ok")
    h.pump(lambda: h.server.connection_count() == 1, what="idle keep-alive connection closed")
    # Its own timeout, well before the 5 s handshake_timeout.
    assert 0.3 <= h.server.reactor.time() - started < 2.0
    conn.close()
    h.finish()


def test_max_connections_answers_503_and_keeps_serving(harness):
    h = harness(max_connections=5)  # the healthy WebSocket client holds one
    held = [socket.create_connection(h.address) for _ in range(4)]
    h.pump(lambda: h.server.connection_count() == 5)
    answer = raw_request(h, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(answer) == 503 and b"Retry-After: 1\r\n" in answer
    h.keeps_working()
    held.pop().close()
    h.pump(lambda: h.server.connection_count() == 4)
    assert status_of(raw_request(h, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")) == 404  # served again
    for sock in held:
        sock.close()
    h.finish()


def test_on_select_the_default_max_connections_fits_and_a_larger_choice_is_refused(monkeypatch, caplog):
    monkeypatch.setenv("WSSERVER_POLLER", "select")  # Windows' poller: 512 sockets at most
    server = Server()
    with caplog.at_level("INFO", logger="wsserver"):
        server.start("127.0.0.1", 0)
    assert server.max_connections == SELECT_MAX_CONNECTIONS == 496
    assert sum("max_connections is 496" in r.getMessage() for r in caplog.records) == 1
    server.stop()
    chosen = Server(max_connections=600)
    with pytest.raises(ValueError, match="max_connections=600 is more than this platform's select"):
        chosen.start("127.0.0.1", 0)
    assert not chosen.started
    fitting = Server(max_connections=SELECT_MAX_CONNECTIONS)
    fitting.start("127.0.0.1", 0)
    fitting.stop()


# Opens COUNT connections, sends one HTTP request on each, and prints how
# many got which status ("closed" when the server ended it unanswered).
CROWD = textwrap.dedent(
    """
    import collections, json, socket, sys
    port, count = int(sys.argv[1]), int(sys.argv[2])
    crowd = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    for sock in crowd:
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
    answers = collections.Counter()
    for sock in crowd:
        head = b""
        while b"\\r\\n" not in head:
            try:
                more = sock.recv(4096)
            except ConnectionResetError:
                more = b""
            if not more:
                break
            head += more
        answers[head[9:12].decode() if head.startswith(b"HTTP/1.1 ") else "closed"] += 1
    print(json.dumps(answers), flush=True)
    sys.stdin.read()  # hold every connection until the test is done
    """
)


@pytest.mark.slow
def test_on_select_connection_513_and_beyond_are_refused_and_the_server_keeps_serving(monkeypatch):
    """select() on Windows takes 512 sockets: 600 connections at once get
    496 answers and 104 refusals (503, or closed where select() has no room
    left for the 503), nothing raises, and the server serves again after."""
    monkeypatch.setenv("WSSERVER_POLLER", "select")
    server = Server()
    server.on_message = lambda client, message: client.send(message.data)
    server.start("127.0.0.1", 0)
    crowd = subprocess.Popen(
        [sys.executable, "-c", CROWD, str(server.get_local_ip()[1]), "600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # The crowd prints once every connection has its answer; the
        # server is pumped meanwhile (the pipe is read only then).
        pump_until(server, lambda: crowd.poll() is not None or server.connection_count() == SELECT_MAX_CONNECTIONS, timeout=60, what="the crowd")
        pump_until(server, lambda: crowd.poll() is not None or _readable(crowd.stdout), timeout=60, what="the crowd's answers")
        answers = json.loads(crowd.stdout.readline())
        print(answers)
        assert answers.get("404") == SELECT_MAX_CONNECTIONS
        assert answers.get("503", 0) + answers.get("closed", 0) == 600 - SELECT_MAX_CONNECTIONS
        assert server.connection_count() == SELECT_MAX_CONNECTIONS
    finally:
        crowd.stdin.close()
        crowd.wait(timeout=30)
        crowd.stdout.close()
    pump_until(server, lambda: server.connection_count() == 0, timeout=30, what="every connection to end")
    assert run_client(server, _echo, server.get_url()) == "served again"
    server.stop()


def _readable(pipe) -> bool:
    import select

    return bool(select.select([pipe], [], [], 0)[0])


def _echo(url: str) -> str:
    with connect(url, open_timeout=10) as ws:
        ws.send("served again")
        return ws.recv(timeout=10)


# -- heartbeats ------------------------------------------------------------------


def test_one_way_pong_heartbeats_drop_no_one(harness):
    """With heartbeat_type=10 there is nothing to answer, so heartbeat_timeout
    does not apply: a silent client stays, and gets the heartbeats."""
    h = harness(heartbeat_interval=0.1, heartbeat_timeout=0.1, heartbeat_type=10, heartbeat_data=b"hb")
    sock = socket.create_connection(h.address)
    sock.sendall(handshake_request("/quiet"))
    assert run_client(h.server, read_http_head, sock).startswith(b"HTTP/1.1 101 ")
    quiet = h.recorder.opened[-1]
    until = h.server.reactor.time() + 0.8
    h.pump(lambda: h.server.reactor.time() > until)
    assert quiet.is_connected
    sock.setblocking(False)
    assert sock.recv(65536).startswith(b"\x8a\x02hb\x8a\x02hb")
    sock.close()
    h.finish()


# -- origins ---------------------------------------------------------------------


def test_origins_allow_list(harness):
    """Besides the server's own origin, a page of a listed origin may open a
    WebSocket; any other gets 403 before the application's hook runs."""
    h = harness(origins=["http://app.example"])
    asked = []
    h.server.on_upgrade_to_websocket = lambda client, request, response, protocols, origin: asked.append(origin)
    own = "http://" + h.url.split("/")[2]

    def attempt(origin):
        try:
            with connect(h.url, origin=origin) as ws:
                ws.send("hi")
                return ws.recv(timeout=5)
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run_client(h.server, attempt, "http://app.example") == "hi"
    assert run_client(h.server, attempt, own) == "hi"
    assert run_client(h.server, attempt, "http://evil.example") == 403
    assert run_client(h.server, attempt, "http://app.example:8080") == 403  # another origin
    assert asked == ["http://app.example", own]  # the others were refused before the application's hook
    h.finish()


@pytest.mark.parametrize("origins", [None, ["http://app.example"]])
def test_clients_that_send_no_origin_are_programs_and_stay_allowed(harness, origins):
    h = harness(origins=origins, healthy=False)

    def attempt():
        with connect(h.url) as ws:
            ws.send("hi")
            return ws.recv(timeout=5)

    assert run_client(h.server, attempt) == "hi"
    h.finish()
