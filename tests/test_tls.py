"""TLS: ``wss://`` and ``https://`` on one port, with real clients.

Certificates come from ``trustme`` (a throwaway CA made per test session);
``wsserver.tls.self_signed_context`` makes its own. The handshake runs a
step at a time inside ``poll()``: a client that stalls half-way is dropped
by ``handshake_timeout``, plain HTTP on the TLS port fails cleanly, and a
storm of TLS clients leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from chromium import AVAILABLE, Chromium
from conftest import DEADLINE, Recorder, pump_until, run_client
from wsserver import Client, Message, Response, Server

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="module")
def server_ssl(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # As wsserver.tls.server_context: no session tickets, which websockets'
    # sync client sometimes loses its request to (see its docstring).
    context.num_tickets = 0
    ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_server(server_ssl: ssl.SSLContext, tmp_path: Path) -> Any:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>tls</title><p>served over TLS</p>\n")
    server = Server(ssl_context=server_ssl, root=site)
    server.start("127.0.0.1", 0)
    yield server
    server.shutdown()


def test_urls_say_wss_and_https(tls_server: Server) -> None:
    port = tls_server.get_local_ip()[1]
    assert tls_server.get_url("chat") == f"wss://127.0.0.1:{port}/chat"
    assert tls_server.http_server.get_url() == f"https://127.0.0.1:{port}/"


def test_websockets_client_echo_and_publish_over_wss(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    recorder = Recorder(tls_server)

    def on_message(client: Client, message: Message) -> None:
        recorder.messages.append((client, message))
        if message.data == "publish":
            tls_server.publish("to all")
        else:
            client.send(message.data)

    tls_server.on_message = on_message

    def client() -> list[Any]:
        url = tls_server.get_url()
        with connect(url, ssl=client_ssl, max_size=None) as first, connect(url, ssl=client_ssl) as second:
            first.send("hello")
            big = os.urandom(1024 * 1024)
            first.send(big)
            replies = [first.recv(), first.recv() == big]
            second.send("publish")
            return replies + [first.recv(), second.recv()]

    assert run_client(tls_server, client) == ["hello", True, "to all", "to all"]
    pump_until(tls_server, recorder.all_closed)
    recorder.check_invariants()


def test_https_page_with_keep_alive_and_a_range(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    def client() -> list[Any]:
        connection = http.client.HTTPSConnection("127.0.0.1", tls_server.get_local_ip()[1], context=client_ssl, timeout=DEADLINE)
        connection.request("GET", "/")
        first = connection.getresponse()
        page = first.read()
        sock = connection.sock
        connection.request("GET", "/index.html", headers={"Range": "bytes=0-14"})
        second = connection.getresponse()
        part = second.read()
        same = connection.sock is sock  # kept alive: the same TLS connection
        connection.close()
        return [first.status, b"served over TLS" in page, second.status, part, same]

    assert run_client(tls_server, client) == [200, True, 206, b"<!doctype html>", True]


def test_cookies_over_https_are_secure_by_default(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    def remember(request: Any) -> Any:
        response = Response("ok")
        response.set_cookie("theme", "dark")
        response.set_cookie("plain", "1", secure=False)
        return response

    tls_server.http_server.route("/remember", handler=remember)

    def client() -> list[str]:
        connection = http.client.HTTPSConnection("127.0.0.1", tls_server.get_local_ip()[1], context=client_ssl, timeout=DEADLINE)
        try:
            connection.request("GET", "/remember")
            return connection.getresponse().headers.get_all("Set-Cookie") or []
        finally:
            connection.close()

    assert run_client(tls_server, client) == ["theme=dark; Path=/; Secure; HttpOnly; SameSite=Lax", "plain=1; Path=/; HttpOnly; SameSite=Lax"]


def test_plain_http_and_plain_ws_on_the_tls_port_fail_cleanly(
    tls_server: Server, client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    Recorder(tls_server, echo=True)
    caplog.set_level(logging.WARNING, logger="wsserver")


    def plain_ws() -> str:
        try:
            with connect(tls_server.get_url().replace("wss://", "ws://"), open_timeout=DEADLINE):
                return "connected"
        except Exception as exc:  # the server ends the connection
            return type(exc).__name__

    def secure_ws() -> str:
        with connect(tls_server.get_url(), ssl=client_ssl) as ws:
            ws.send("still fine")
            return str(ws.recv())

    for _ in range(3):
        answer = run_client(tls_server, send_and_read_to_the_end, tls_server.get_local_ip(), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.endswith(b"use https:// (or wss://).\n")
    assert run_client(tls_server, plain_ws) != "connected"
    assert run_client(tls_server, secure_ws) == "still fine"
    failures = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) <= 2, [r.getMessage() for r in failures]  # one line per kind, not one per connection


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first bytes a TLS client sends."""
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def send_and_read_to_the_end(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a new connection; what came back until the server closed it."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def test_a_tls_client_on_a_plain_port_gets_the_400(server: Server, client_ssl: ssl.SSLContext) -> None:
    answer = run_client(server, send_and_read_to_the_end, server.get_local_ip(), client_hello(client_ssl))
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_handshake_that_stalls_half_way_is_dropped_on_time(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    server = Server(ssl_context=server_ssl, handshake_timeout=0.3)
    server.start("127.0.0.1", 0)
    try:
        hello = client_hello(client_ssl)
        half = hello[: len(hello) // 2]  # and then nothing
        assert run_client(server, send_and_read_to_the_end, server.get_local_ip(), half) == b""  # closed by the server
        pump_until(server, lambda: server.connection_count() == 0)
    finally:
        server.shutdown()


def test_a_client_that_rejects_the_certificate_disturbs_no_one(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    Recorder(tls_server, echo=True)
    untrusting = ssl.create_default_context()  # does not know the test CA

    def rejecting() -> str:
        try:
            with connect(tls_server.get_url(), ssl=untrusting, open_timeout=DEADLINE):
                return "connected"
        except ssl.SSLCertVerificationError:
            return "rejected"

    def trusting() -> str:
        with connect(tls_server.get_url(), ssl=client_ssl) as ws:
            ws.send("fine")
            return str(ws.recv())

    assert run_client(tls_server, rejecting) == "rejected"
    assert run_client(tls_server, trusting) == "fine"


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_storm_of_1000_tls_clients_leaves_nothing_behind(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    recorder = Recorder(tls_server, echo=True)
    count = 1000
    before = _descriptors()

    async def storm() -> int:
        from websockets.asyncio.client import connect as connect_async

        async def one(i: int) -> Any:
            ws = await connect_async(tls_server.get_url(), ssl=client_ssl, open_timeout=DEADLINE, ping_interval=None)
            await ws.send(f"m{i}")
            assert await ws.recv() == f"m{i}"
            return ws

        clients = []
        for start in range(0, count, 100):
            clients += await asyncio.gather(*(one(i) for i in range(start, start + 100)))
        # Half say goodbye, half vanish (TCP reset, no close_notify).
        await asyncio.gather(*(ws.close() for ws in clients[::2]))
        for ws in clients[1::2]:
            ws.transport.abort()
        return len(clients)

    assert run_client(tls_server, lambda: asyncio.run(storm()), timeout=150) == count
    pump_until(tls_server, lambda: len(recorder.closed) == count and tls_server.connection_count() == 0, timeout=60)
    pump_until(tls_server, lambda: tls_server.reactor.lingering == 0, timeout=10)
    recorder.check_invariants()
    assert _descriptors() <= before


def test_self_signed_context_serves_a_client_that_trusts_its_certificate(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from wsserver.tls import self_signed_context

    certfile = tmp_path / "cert.pem"
    context = self_signed_context(["127.0.0.1", "localhost"], certfile=certfile)
    assert context.num_tickets == 0 and context.minimum_version == ssl.TLSVersion.TLSv1_2
    server = Server(ssl_context=context)
    Recorder(server, echo=True)
    server.start("127.0.0.1", 0)
    try:
        trusting = ssl.create_default_context(cafile=str(certfile))

        def client() -> str:
            with connect(server.get_url(), ssl=trusting) as ws:
                ws.send("self-signed")
                return str(ws.recv())

        assert run_client(server, client) == "self-signed"
        assert b"PRIVATE KEY" not in certfile.read_bytes()
    finally:
        server.shutdown()


PAGE = """<!doctype html>
<meta charset="utf-8">
<script>
window.outcome = new Promise((resolve, reject) => {
  const ws = new WebSocket(`wss://${location.host}/secure`);
  ws.onerror = () => reject(new Error("websocket error"));
  ws.onopen = () => ws.send(`from ${location.protocol} ${window.isSecureContext}`);
  ws.onmessage = (event) => { ws.close(1000); resolve(event.data); };
});
</script>
"""


@pytest.mark.skipif(not AVAILABLE, reason="chromium is not installed (bash .ci/run installs the Debian package)")
def test_chromium_loads_the_page_over_https_and_opens_wss(ca: Any, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    issued = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(context)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    trusted = base64.b64encode(hashlib.sha256(spki).digest()).decode()

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    server = Server(ssl_context=context, root=site)
    recorder = Recorder(server, echo=True)
    server.start("127.0.0.1", 0)
    url = server.http_server.get_url("/")
    assert url.startswith("https://")

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0, flags=(f"--ignore-certificate-errors-spki-list={trusted}",)) as browser:
            session = browser.open(url)
            return browser.evaluate(session, "window.outcome")

    try:
        assert run_client(server, browse, timeout=120) == "from https: true"
        pump_until(server, recorder.all_closed)
        (client,) = recorder.opened
        assert client.request.headers["Origin"] == url.rstrip("/")
    finally:
        server.shutdown()


def pipeline_then_close_notify(server: Server, client_ssl: ssl.SSLContext, requests: bytes) -> bytes:
    """Send pipelined ``requests`` and close_notify in one write (TLS takes
    the end of stream in together with the requests), then read every
    answer until the server ends the connection."""

    def client() -> bytes:
        with socket.create_connection(server.get_local_ip(), timeout=DEADLINE) as sock:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_ssl.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            tls.write(requests)
            with pytest.raises(ssl.SSLWantReadError):
                tls.unwrap()  # close_notify, sent with the requests
            sock.sendall(outgoing.read())
            answers = b""
            while chunk := sock.recv(65536):
                incoming.write(chunk)
                try:
                    while data := tls.read(65536):
                        answers += data
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
            return answers

    return bytes(run_client(server, client))


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def test_pipelined_requests_ending_with_close_notify_are_all_answered(tls_server: Server, client_ssl: ssl.SSLContext) -> None:
    """The server answers every request that came with the end of stream,
    over more than one turn, then ends the connection."""
    count = 40  # more than one turn's worth (32)
    assert pipeline_then_close_notify(tls_server, client_ssl, get("/index.html") * count).count(b"HTTP/1.1 200 OK") == count


def test_the_connection_ends_when_the_budget_runs_out_at_the_last_request(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, tmp_path: Path) -> None:
    """The end of stream is taken in while the first answer still streams
    (a large file), and a budget of zero ends a turn after every request
    behind it, so the last one is answered just as a turn ends: the
    connection must still end. (It waited for input that could never come,
    and the client hung: about one run in 30 of the test above met that by
    chance.)"""
    (tmp_path / "big.bin").write_bytes(bytes(4 * 1024 * 1024))
    server = Server(ssl_context=server_ssl, root=tmp_path, poll_budget=0.0)
    server.http_server.route("/n", handler=lambda request: "n")
    server.start("127.0.0.1", 0)
    try:
        answers = pipeline_then_close_notify(server, client_ssl, get("/big.bin") + get("/n") * 3)
        assert answers.count(b"HTTP/1.1 200 OK") == 4
    finally:
        server.shutdown()
