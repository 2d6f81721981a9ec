"""Secure by default: foreign pages cannot open a WebSocket (cross-site
WebSocket hijacking), foreign names cannot reach the server (DNS rebinding).

The rules live in ``wsserver/http/policy.py`` and are tested here as pure
functions, over raw sockets, with ``websockets`` and ``websocket-client``,
and with a real browser: a page served from another port tries to connect.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import websocket  # websocket-client
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from chromium import AVAILABLE, Chromium
from conftest import DEADLINE, Worker, pump_until, run_client
from rawws import read_http_head
from wsserver import Response, Server
from wsserver.http.policy import ANY, host_allowed, origin_allowed, split_host

# -- the rules, as functions ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST:8765", ("localhost", 8765)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8765", ("::1", 8765)),
        ("[::1]", ("::1", None)),
        ("example.lan.", ("example.lan", None)),
        ("::1", None),  # an IPv6 literal needs brackets
        ("host:0", None),
        ("host:65536", None),
        ("host:x", None),
        ("user@host", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_host_headers_are_split_or_refused(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(value) == parsed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "127.0.0.1:8765", None, True),  # a program, not a browser
        ("http://127.0.0.1:8765", "127.0.0.1:8765", None, True),  # the server's own page
        ("http://localhost:8765", "LOCALHOST:8765", None, True),
        ("http://127.0.0.1:80", "127.0.0.1", None, True),  # default ports
        ("http://[::1]:8765", "[::1]:8765", None, True),
        ("http://127.0.0.1:9000", "127.0.0.1:8765", None, False),  # another port
        ("https://127.0.0.1:8765", "127.0.0.1:8765", None, False),  # another scheme
        ("http://attacker.example", "127.0.0.1:8765", None, False),
        ("null", "127.0.0.1:8765", None, False),  # a sandboxed frame or a file: page
        ("null", "127.0.0.1:8765", ["null"], True),
        ("http://app.example", "127.0.0.1:8765", ["http://app.example"], True),
        ("http://app.example:81", "127.0.0.1:8765", ["http://app.example"], False),
        ("http://attacker.example", "127.0.0.1:8765", ANY, True),
        ("http://127.0.0.1:8765/path", "127.0.0.1:8765", None, False),  # not an origin
        ("http://127.0.0.1:99999", "127.0.0.1:8765", None, False),
        ("http://127.0.0.1:8765", None, None, False),
    ],
)
def test_the_origin_rule(origin: str | None, host: str | None, allowed: Any, expected: bool) -> None:
    assert origin_allowed(origin, host, "http", allowed) is expected


@pytest.mark.parametrize(
    ("host", "bound", "allowed", "expected"),
    [
        ("localhost:8765", "127.0.0.1", None, True),
        ("app.localhost:8765", "127.0.0.1", None, True),
        ("127.0.0.1:8765", "127.0.0.1", None, True),
        ("127.0.0.2", "127.0.0.1", None, True),
        ("[::1]:8765", "::1", None, True),
        ("attacker.example:8765", "127.0.0.1", None, False),  # DNS rebinding
        ("192.168.1.20:8765", "127.0.0.1", None, False),  # loopback bind: loopback only
        ("192.168.1.20:8765", "0.0.0.0", None, True),  # an IP address cannot be rebound
        ("[fe80::1]:8765", "::", None, True),
        ("attacker.example", "0.0.0.0", None, False),
        ("mypc.lan:8765", "0.0.0.0", ["mypc.lan"], True),
        ("MyPC.lan.", "0.0.0.0", ["mypc.lan"], True),
        ("a.example.lan", "0.0.0.0", [".example.lan"], True),
        ("example.lan", "0.0.0.0", [".example.lan"], True),
        ("badexample.lan", "0.0.0.0", [".example.lan"], False),
        ("attacker.example", "127.0.0.1", ANY, True),
        (None, "127.0.0.1", None, True),  # HTTP/1.0 without Host: a program
        ("bad host", "127.0.0.1", None, False),
    ],
)
def test_the_host_rule(host: str | None, bound: str, allowed: Any, expected: bool) -> None:
    assert host_allowed(host, bound, allowed) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_any_header_value_gives_an_answer_not_an_exception(origin: str, host: str) -> None:
    assert origin_allowed(origin, host, "http", None) in (True, False)
    assert host_allowed(host, "127.0.0.1", None) in (True, False)
    assert host_allowed(host, "0.0.0.0", ["mypc.lan", ".example.lan"]) in (True, False)


# -- over sockets -----------------------------------------------------------------


def raw_request(server: Server, request: bytes) -> bytes:
    """Send one raw request; return the status line of the answer."""

    def client() -> bytes:
        with socket.create_connection(server.get_local_ip(), timeout=DEADLINE) as sock:
            sock.sendall(request)
            return read_http_head(sock).split(b"\r\n", 1)[0]

    return run_client(server, client)  # type: ignore[no-any-return]


def upgrade(host: str | None, origin: str | None = None) -> bytes:
    lines = ["GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if host is not None:
        lines.append(f"Host: {host}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", b"200"),
        ("LOCALHOST:{port}", b"200"),
        ("127.0.0.1:{port}", b"200"),
        ("attacker.example:{port}", b"421"),
        ("ATTACKER.example", b"421"),
        ("[::1]:{port}", b"200"),
        ("192.168.1.20:{port}", b"421"),
    ],
)
def test_a_page_request_with_a_foreign_host_gets_421(server: Server, host: str, status: bytes, caplog: pytest.LogCaptureFixture) -> None:
    server.http_server.route("/", handler=lambda request: "the page")
    port = server.get_local_ip()[1]
    host = host.format(port=port)
    with caplog.at_level(logging.WARNING, logger="wsserver"):
        line = raw_request(server, f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert line.split()[1] == status, line
    refusals = [r.getMessage() for r in caplog.records if "refused a request for Host" in r.getMessage()]
    assert len(refusals) == (status == b"421")


def test_a_request_without_host_is_refused_by_http_1_1_and_served_to_http_1_0(server: Server) -> None:
    server.http_server.route("/", handler=lambda request: "the page")
    assert raw_request(server, b"GET / HTTP/1.1\r\n\r\n").split()[1] == b"400"
    assert raw_request(server, b"GET / HTTP/1.0\r\n\r\n").split()[1] == b"200"


@pytest.mark.parametrize(
    ("host", "origin", "status"),
    [
        ("127.0.0.1:{port}", None, b"101"),
        ("127.0.0.1:{port}", "http://127.0.0.1:{port}", b"101"),
        ("localhost:{port}", "http://localhost:{port}", b"101"),
        ("127.0.0.1:{port}", "http://localhost:{port}", b"403"),  # another host name: another origin
        ("127.0.0.1:{port}", "http://127.0.0.1:1", b"403"),
        ("127.0.0.1:{port}", "https://127.0.0.1:{port}", b"403"),
        ("127.0.0.1:{port}", "null", b"403"),
        ("127.0.0.1:{port}", "http://attacker.example", b"403"),
        ("attacker.example:{port}", "http://attacker.example:{port}", b"421"),  # rebinding: same origin, foreign host
        (None, None, b"400"),
    ],
)
def test_upgrades_by_host_and_origin(server: Server, host: str | None, origin: str | None, status: bytes) -> None:
    port = server.get_local_ip()[1]
    request = upgrade(host and host.format(port=port), origin and origin.format(port=port))
    assert raw_request(server, request).split()[1] == status


def test_a_refused_upgrade_s_error_page_sees_the_request(server: Server) -> None:
    seen: list[Any] = []

    def page(request: Any, status: int) -> str:
        seen.append((status, request.headers.get("Origin") if request is not None else None))
        return f"refused {status}"

    server.http_server.error_pages[403] = page
    port = server.get_local_ip()[1]
    assert raw_request(server, upgrade(f"127.0.0.1:{port}", "http://attacker.example")).split()[1] == b"403"
    assert seen == [(403, "http://attacker.example")]


def test_python_clients_connect_with_and_without_an_origin(server: Server) -> None:
    server.on_message = lambda client, message: client.send(message.data)
    url = server.get_url()

    def clients() -> list[str]:
        replies = []
        with connect(url, open_timeout=DEADLINE) as ws:  # websockets: no Origin
            ws.send("websockets")
            replies.append(ws.recv(timeout=DEADLINE))
        for options in ({}, {"suppress_origin": True}):  # websocket-client: its default origin, and none
            ws = websocket.create_connection(url, timeout=DEADLINE, **options)
            ws.send(f"websocket-client {options}")
            replies.append(ws.recv())
            ws.close()
        return replies

    assert run_client(server, clients) == ["websockets", "websocket-client {}", "websocket-client {'suppress_origin': True}"]


def test_websocket_client_from_a_foreign_origin_is_refused(server: Server) -> None:
    def client() -> str:
        try:
            websocket.create_connection(server.get_url(), timeout=DEADLINE, origin="http://attacker.example").close()
        except websocket.WebSocketBadStatusException as exc:
            return str(exc.status_code)
        return "connected"

    assert run_client(server, client) == "403"


# -- a real browser ---------------------------------------------------------------

FOREIGN_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>a foreign page</title>
<script>
"use strict";
window.outcome = new Promise((resolve) => {
  const result = { opened: false };
  const ws = new WebSocket("ws://127.0.0.1:TARGET_PORT/");
  ws.onopen = () => { result.opened = true; ws.send("from a foreign page"); };
  ws.onmessage = (event) => { result.echo = event.data; ws.close(1000); };
  ws.onclose = (event) => { result.code = event.code; resolve(result); };
});
</script>
"""


def foreign_page_outcome(target: Server, tmp_path: Path, allow: bool = False) -> Any:
    """Serve a page from a second server on another port whose script opens
    a WebSocket to ``target`` (with ``allow``, ``target`` lists the page's
    origin in ``origins``); return what the page saw."""
    page = FOREIGN_PAGE.replace("TARGET_PORT", str(target.get_local_ip()[1]))
    foreign = Server()
    foreign.http_server.route("/", handler=lambda request: Response(page, content_type="text/html; charset=utf-8"))
    foreign.start("127.0.0.1", 0)
    url = foreign.http_server.get_url("/")
    if allow:
        target.origins = [url.rstrip("/")]

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            return browser.evaluate(browser.open(url), "window.outcome")

    worker = Worker(browse)
    worker.start()
    deadline = time.monotonic() + 120
    try:
        while worker.is_alive():
            assert time.monotonic() < deadline, "the browser did not finish"
            target.poll(0.005)
            foreign.poll(0.005)
    finally:
        foreign.shutdown()
    return worker.outcome()


@pytest.mark.skipif(not AVAILABLE, reason="chromium is not installed (bash .ci/run installs the Debian package)")
def test_a_foreign_page_in_a_browser_cannot_open_a_websocket(make_server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = make_server()
    target.on_message = lambda client, message: client.send(message.data)
    with caplog.at_level(logging.WARNING, logger="wsserver"):
        outcome = foreign_page_outcome(target, tmp_path)
    assert outcome == {"opened": False, "code": 1006}
    refusals = [r.getMessage() for r in caplog.records if "refused a WebSocket upgrade from origin" in r.getMessage()]
    assert len(refusals) == 1 and "http://127.0.0.1:" in refusals[0], refusals
    assert target.client_count() == 0


@pytest.mark.skipif(not AVAILABLE, reason="chromium is not installed (bash .ci/run installs the Debian package)")
def test_a_listed_foreign_origin_may_open_a_websocket(make_server, tmp_path: Path) -> None:
    target = make_server()
    target.on_message = lambda client, message: client.send(message.data)
    opened: list[str | None] = []
    target.on_open = lambda client: opened.append(client.request.headers.get("Origin"))
    outcome = foreign_page_outcome(target, tmp_path, allow=True)
    assert outcome == {"opened": True, "echo": "from a foreign page", "code": 1000}
    assert opened == list(target.origins)
    pump_until(target, lambda: target.client_count() == 0)
