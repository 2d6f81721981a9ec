"""Broken and hostile peers over real sockets.

Every test keeps a healthy ``websockets`` client echoing through the server
while the fault happens, and ends with :meth:`Harness.finish`, which checks
the invariants: the healthy client never lost an echo, ``on_client_closed``
ran exactly once per client ``on_open`` ran for and for no other,
``client_count()`` is back to 0, and nothing escaped to the reactor's
last-resort handler (``poll()`` itself raising would fail the test at once).
"""

from __future__ import annotations

import socket
import struct

import pytest
from websockets.exceptions import ConnectionClosedOK

from conftest import driver_of
from rawws import (
    client_frame,
    close_payload,
    handshake_request,
    read_frame,
    read_http_head,
)
from swarm import Harness, HealthyClient, RawSockets, Swarm, raise_open_file_limit
from wsserver import Client
from wsserver.protocol import CloseCode, Opcode


def open_raw(h: Harness, path: str = "/raw") -> tuple[socket.socket, Client]:
    """A raw client through the handshake; returns its socket and its server-side Client."""
    sock = socket.create_connection(h.address)
    count = len(h.recorder.opened)
    sock.sendall(handshake_request(path))
    h.pump(lambda: len(h.recorder.opened) > count)
    head = read_http_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, h.recorder.opened[-1]


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_close(sock: socket.socket) -> int:
    """Skip data frames up to the server's Close frame; return its code."""
    while True:
        opcode, _, payload = read_frame(sock)
        if opcode == Opcode.CLOSE:
            return struct.unpack("!H", payload[:2])[0]


# -- resets, half-closes, vanishing ------------------------------------------


def test_reset_mid_frame(harness):
    h = harness()
    sock, client = open_raw(h)
    frame = client_frame(Opcode.BINARY, b"x" * 1000)
    sock.sendall(frame[:300])
    h.pump(lambda: driver_of(client).ws._header is not None, what="frame half read")
    reset(sock)
    h.pump(lambda: client.is_closed)
    assert client.close_code == CloseCode.ABNORMAL
    assert not [m for c, m in h.recorder.messages if c is client]
    h.finish()


def test_reset_mid_handshake_owes_no_callbacks(harness):
    h = harness()
    sock = socket.create_connection(h.address)
    sock.sendall(handshake_request()[:40])
    h.pump(lambda: h.server.connection_count() == 2)
    reset(sock)
    h.pump(lambda: h.server.connection_count() == 1)
    h.finish()
    assert len(h.recorder.opened) == 1  # only the healthy client


def test_half_close_after_a_message_gets_the_answer_then_the_close(harness):
    h = harness()
    sock, client = open_raw(h)
    sock.sendall(client_frame(Opcode.TEXT, b"last words"))
    sock.shutdown(socket.SHUT_WR)
    data = h.read_until_closed(sock)
    # The echo of the message that came before the FIN is delivered.
    assert data == b"\x81\x0alast words"
    sock.close()
    h.pump(lambda: client.is_closed)
    assert client.close_code == CloseCode.ABNORMAL
    h.finish()


def test_half_close_mid_frame(harness):
    h = harness()
    sock, client = open_raw(h)
    sock.sendall(client_frame(Opcode.TEXT, b"never finished")[:8])
    sock.shutdown(socket.SHUT_WR)
    assert h.read_until_closed(sock) == b""
    sock.close()
    assert client.close_code == CloseCode.ABNORMAL
    assert not [m for c, m in h.recorder.messages if c is client]
    h.finish()


def test_silent_vanish_is_detected_by_the_heartbeat(harness):
    h = harness(heartbeat_interval=0.2, heartbeat_timeout=0.3)
    sock, client = open_raw(h)
    # From here the client neither reads nor answers: a peer that vanished
    # without a FIN or an RST looks exactly like this to the server.
    h.pump(lambda: client.is_closed, what="heartbeat timeout")
    assert client.close_code == CloseCode.INTERNAL_ERROR
    assert [type(e) for c, e in h.recorder.errors if c is client] == [TimeoutError]
    # What reached the socket: a ping, then the 1011 Close frame.
    sock.settimeout(5)
    assert read_frame(sock)[0] == Opcode.PING
    assert read_close(sock) == CloseCode.INTERNAL_ERROR
    sock.close()
    h.finish()


# -- floods and oversized input -------------------------------------------------


def test_ping_flood_from_a_reader_gets_every_pong_in_order(harness):
    h = harness()
    sock, client = open_raw(h)
    count = 3000
    sock.sendall(b"".join(client_frame(Opcode.PING, b"%06d" % i) for i in range(count)))
    sock.setblocking(False)
    got = bytearray()

    def read() -> bool:
        try:
            while chunk := sock.recv(65536):
                got.extend(chunk)
        except BlockingIOError:
            pass
        return len(got) >= count * 8

    h.pump(read, what="every pong")
    assert bytes(got) == b"".join(b"\x8a\x06%06d" % i for i in range(count))
    assert client.is_connected  # answering pings is no reason to drop anyone
    sock.close()
    h.finish()


def test_ping_flood_from_a_client_that_never_reads_is_bounded(harness):
    """Pongs are the protocol's own output, so send() refusals cannot bound
    them: the server stops reading from a client that does not read its
    answers, and then closes it for staying over its limit."""
    limit = 32 * 1024
    h = harness(write_limit=limit, write_grace=0.5, close_timeout=0.5)
    sock, client = open_raw(h)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setblocking(False)
    burst = b"".join(client_frame(Opcode.PING, b"p" * 125) for _ in range(500))
    most_held = 0
    sent = 0

    def flood() -> bool:
        nonlocal most_held, sent
        try:
            while sent < 200 * len(burst):
                sent += sock.send(burst)
        except BlockingIOError:
            pass
        except OSError:
            pass  # the server dropped us
        most_held = max(most_held, client.buffered_amount)
        return client.is_closed

    h.pump(flood, what="ping flooder closed")
    # At most the limit plus the pongs for one read of the flood.
    assert most_held < limit + h.server.reactor.read_size
    assert client.close_code == CloseCode.POLICY_VIOLATION
    reset(sock)
    h.finish()


def test_message_flood_from_a_client_that_never_reads_the_echoes_is_bounded(harness):
    """Once the echoes pass the client's write limit, the server hands out
    no more of its messages (and reads no more) until it catches up: the
    backlog stays within one message of the limit, and the grace ends it."""
    limit = 32 * 1024
    h = harness(write_limit=limit, write_grace=0.5, close_timeout=0.5)
    sock, client = open_raw(h)
    # A small server-side kernel buffer, so the server's own one fills soon.
    # (Not a tiny receive buffer on the client as well: a client whose full
    # receive buffer drops the segments that carry the server's window
    # updates stalls its own sending, and would never flood at all.)
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setblocking(False)
    message = client_frame(Opcode.BINARY, b"m" * 1000)
    burst = message * 100
    most_held = 0
    sent = 0

    def flood() -> bool:
        nonlocal most_held, sent
        try:
            while sent < 100 * len(burst):
                sent += sock.send(burst)
        except OSError:
            pass  # full (the server stopped reading), or dropped
        most_held = max(most_held, client.buffered_amount)
        return client.is_closed

    h.pump(flood, what="message flooder closed")
    assert most_held < limit + 2 * len(message)
    assert client.close_code == CloseCode.POLICY_VIOLATION
    reset(sock)
    h.finish()


def test_random_garbage_after_the_handshake(harness):
    """Mutated frames over real sockets, 60 connections: each ends with a
    Close frame of a receiver's failure code or with the client's own FIN,
    and the server keeps its invariants (the fuzzers cover the parser
    itself; this covers the wiring around it)."""
    import random

    h = harness()
    rng = random.Random(6455)
    good = client_frame(Opcode.TEXT, "héllo wörld".encode()) + client_frame(Opcode.BINARY, bytes(200))
    for _ in range(60):
        data = bytearray(good * 3)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        sock, client = open_raw(h)
        sock.sendall(bytes(data))
        sock.shutdown(socket.SHUT_WR)
        answer = h.read_until_closed(sock)
        sock.close()
        h.pump(lambda client=client: client.is_closed)
        close_code = None
        while answer:  # echoes, then maybe a Close frame
            opcode, length = answer[0] & 0x0F, answer[1] & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            length = length if length < 126 else int.from_bytes(answer[2:size], "big")
            payload, answer = answer[size : size + length], answer[size + length :]
            if opcode == Opcode.CLOSE:
                close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                assert not answer, "bytes after the Close frame"
        received = [code for c, code, _ in h.recorder.closes if c is client]
        if close_code is None:
            assert client.close_code == CloseCode.ABNORMAL  # the client's FIN came first
        elif received:
            assert client.close_code == received[0]  # a mutation made a Close frame: echoed
        else:
            assert close_code in (1002, 1007, 1009) and client.close_code == close_code
        h.keeps_working(1)
    h.finish()


@pytest.mark.parametrize(
    ("length", "code"),
    [(2**63, CloseCode.PROTOCOL_ERROR), (2**63 - 1, CloseCode.MESSAGE_TOO_BIG), (2**32, CloseCode.MESSAGE_TOO_BIG)],
)
def test_huge_length_header(harness, length, code):
    h = harness()
    sock, client = open_raw(h)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, length) + b"\x01\x02\x03\x04"
    sock.sendall(header + b"\x00" * 64)
    data = h.read_until_closed(sock)
    sock.close()
    # The Close frame with the code, then the end of the connection.
    assert data == b"\x88" + bytes([len(data) - 2]) + struct.pack("!H", code) + data[4:]
    assert client.close_code == code
    h.finish()


def test_endless_fragmented_message_fails_with_1009(harness):
    limit = 64 * 1024
    h = harness(max_message_size=limit)
    sock, client = open_raw(h)
    sock.setblocking(False)
    piece = b"a" * 1024
    frames = [client_frame(Opcode.TEXT, piece, fin=False)]
    sent_bytes = 0
    for _ in range(10_000):
        if client.is_closed:
            break
        frames.append(client_frame(Opcode.CONTINUATION, piece, fin=False))
        try:
            sock.sendall(frames.pop(0))
        except OSError:
            break
        sent_bytes += len(piece)
        h.server.poll(0)
    else:
        raise AssertionError("the endless message was never refused")
    h.pump(lambda: client.is_closed)
    assert client.close_code == CloseCode.MESSAGE_TOO_BIG
    assert sent_bytes <= limit + 2 * h.server.reactor.read_size
    assert not [m for c, m in h.recorder.messages if c is client]
    sock.setblocking(True)
    sock.settimeout(5)
    assert read_close(sock) == CloseCode.MESSAGE_TOO_BIG
    sock.close()
    h.finish()


@pytest.mark.slow
def test_a_thousand_connections_that_never_handshake(harness):
    count = 1000
    raise_open_file_limit(2 * count + 200)
    h = harness(handshake_timeout=1.5)
    raw = RawSockets()
    try:
        socks = []
        for _ in range(count // 100):
            # In batches the size of the listen backlog's order, so that no
            # SYN is dropped and retried a second later.
            socks += raw.connect(100, h.address)
            held = len(socks) + 1
            h.pump(lambda held=held: h.server.connection_count() == held, what="connections accepted")
        # Half of them start a request and never finish it (slowloris).
        for sock in socks[::2]:
            sock.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        h.keeps_working(20)  # while the server holds all of them
        assert h.server.connection_count() == count + 1

        def all_dropped() -> bool:
            raw.read_all()
            return len(raw.eof) == count

        h.pump(all_dropped, what="every idle connection dropped")
        assert h.server.connection_count() == 1
        assert all(raw.received[s].startswith(b"HTTP/1.1 408 ") for s in socks[::2])
        assert all(raw.received[s] == b"" for s in socks[1::2])
        h.finish()
        assert len(h.recorder.opened) == 1
    finally:
        raw.close()


# -- the closing handshake --------------------------------------------------


def test_client_resets_after_the_servers_close_frame(harness):
    h = harness()
    sock, client = open_raw(h)
    client.close(4000, "done")
    sock.settimeout(5)
    assert read_close(sock) == 4000
    reset(sock)
    h.pump(lambda: client.is_closed)
    # No Close frame came back: the closing handshake never completed.
    assert client.close_code == CloseCode.ABNORMAL
    h.finish()


def test_client_resets_in_the_middle_of_its_close_frame(harness):
    h = harness()
    sock, client = open_raw(h)
    sock.sendall(client_frame(Opcode.CLOSE, close_payload(1000, b"bye"))[:8])
    h.pump(lambda: driver_of(client).ws._header is not None)
    reset(sock)
    h.pump(lambda: client.is_closed)
    assert client.close_code == CloseCode.ABNORMAL
    assert not [c for c, *_ in h.recorder.closes if c is client]
    h.finish()


def test_client_closes_and_half_closes_at_once(harness):
    h = harness()
    sock, client = open_raw(h)
    sock.sendall(client_frame(Opcode.CLOSE, close_payload(4001, b"leaving")))
    sock.shutdown(socket.SHUT_WR)
    data = h.read_until_closed(sock)
    sock.close()
    assert data == b"\x88\x02" + struct.pack("!H", 4001)  # the echo of the code, then the end
    assert (client.close_code, client.close_reason) == (4001, "leaving")
    h.finish()


def test_client_that_never_answers_the_close_is_dropped_after_close_timeout(harness):
    h = harness(close_timeout=0.3)
    sock, client = open_raw(h)
    client.close(1000)
    h.pump(lambda: client.is_closed, what="close_timeout")
    assert client.close_code == CloseCode.ABNORMAL
    sock.settimeout(5)
    assert read_close(sock) == 1000
    sock.close()
    h.finish()


# -- application code that raises --------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_in_every_callback(harness):
    h = harness()
    server, rec = h.server, h.recorder
    raised: list[str] = []

    def raising(name, fn=None, when=lambda *args: True):
        def callback(*args):
            if fn is not None:
                fn(*args)
            if when(*args):
                raised.append(name)
                raise Boom(name)

        return callback

    def not_the_healthy_client(client, exc):
        # Its echoes raise in on_message all along; a traceback logged for
        # each of those would only slow the test down.
        return client is None or client.request.path != "/"

    server.on_open = raising("on_open", rec._on_open)
    server.on_message = raising("on_message", server.on_message)  # echoes, then raises
    server.on_close = raising("on_close", rec._on_close)
    server.on_client_closed = raising("on_client_closed", rec._on_client_closed)
    server.add_listener("close", raising("close listener"))
    server.on_drain = raising("on_drain")
    server.translate_message = raising("translate_message")
    server.on_error = raising("on_error", rec._on_error, when=not_the_healthy_client)
    server.before_stop = raising("before_stop")
    server.add_listener("stop", raising("stop listener"))
    server.http_server.route("/boom", handler=raising("route"))

    import http.client

    conn = http.client.HTTPConnection(*h.address, timeout=5)

    def get_boom():
        conn.request("GET", "/boom")
        return conn.getresponse().status

    from conftest import run_client

    assert run_client(server, get_boom) == 500
    conn.close()

    # A raising upgrade hook refuses the upgrade with 500 and owes no callbacks.
    server.on_upgrade_to_websocket = raising("on_upgrade_to_websocket")
    refused = socket.create_connection(h.address)
    refused.sendall(handshake_request("/refused"))
    h.pump(lambda: "on_upgrade_to_websocket" in raised)
    assert read_http_head(refused).startswith(b"HTTP/1.1 500 ")
    refused.close()
    server.on_upgrade_to_websocket = None

    sock, client = open_raw(h)
    sock.sendall(client_frame(Opcode.TEXT, b"hi"))
    h.pump(lambda: any(c is client for c, _ in rec.messages))
    sock.settimeout(5)
    assert read_frame(sock) == (Opcode.TEXT, True, b"hi")  # the echo went out before on_message raised
    # Fill its buffer past the low-water mark (the kernel's buffers first),
    # then let it drain: on_drain raises.
    while client.buffered_amount <= driver_of(client).stream.low_water:
        assert client.send(b"z" * 65536)
    sock.setblocking(False)

    def drain() -> bool:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        return "on_drain" in raised

    h.pump(drain)
    sock.sendall(client_frame(Opcode.CLOSE, close_payload(1000)))
    assert h.read_until_closed(sock).endswith(b"\x88\x02\x03\xe8")  # the rest, then the echoed Close
    h.pump(lambda: client.is_closed)

    # Fragments go to on_fragment for connections opened once it is set.
    server.on_fragment = raising("on_fragment")
    sock2, client2 = open_raw(h)
    sock2.sendall(client_frame(Opcode.TEXT, b"part", fin=False))
    h.pump(lambda: "on_fragment" in raised)
    reset(sock2)
    h.pump(lambda: client2.is_closed)
    sock.close()

    h.keeps_working()
    h.healthy.finish(h.pump)
    h.healthy = None
    server.stop()
    assert not server.started
    every = {
        "route", "on_upgrade_to_websocket", "on_open", "translate_message", "on_message", "on_drain",
        "on_close", "on_client_closed", "close listener", "on_fragment", "on_error", "before_stop", "stop listener",
    }
    assert every <= set(raised), every - set(raised)
    assert all(isinstance(e, Boom) for _, e in rec.errors)
    assert {str(e) for _, e in rec.errors} == every - {"on_error"}
    server.on_fragment = None  # so that the next healthy client gets whole messages echoed
    server.start("127.0.0.1", h.port)  # the port is free again
    h.healthy = HealthyClient(h.url)
    h.healthy.start()
    h.keeps_working()
    h.finish()


# -- stop() under load ---------------------------------------------------------


@pytest.mark.slow
def test_stop_with_a_thousand_clients_and_messages_in_flight_then_start_again(harness):
    count, messages = 1000, 20
    raise_open_file_limit(2 * count + 200)
    h = harness(healthy=False)
    port = h.port
    healthy = HealthyClient(h.url)
    healthy.start()
    h.healthy = healthy
    h.keeps_working()
    swarm = Swarm(h.url)
    swarm.start()
    try:
        swarm.call(swarm.open, count, *h.address)
        h.pump(lambda: sum(c.opened for c in swarm.clients) == count, 30, "a thousand clients open")
        expected = [f"{n:03d} " + "x" * 1000 for n in range(messages)]
        for text in expected:
            assert h.server.publish(text)
        # No poll between the publishes and stop(): the messages are in
        # flight, in the server's buffers, when it stops.
        in_flight = sum(c.buffered_amount for c in h.server.clients())
        h.server.stop(timeout=10)
        assert not h.server.started
        assert h.recorder.all_closed()
        h.recorder.check_invariants()
        # stop() waited for the closing handshakes: every client answered
        # the 1001 and got every message published before it.
        assert {c.close_code for c in h.recorder.opened} == {CloseCode.GOING_AWAY}
        h.pump(lambda: all(c.tcp_closed for c in swarm.clients), 30, "swarm sees every close")
        assert all(c.messages == expected for c in swarm.clients)
        assert {c.close_code for c in swarm.clients} == {CloseCode.GOING_AWAY}
    finally:
        swarm.stop()
    healthy.join(10)
    assert isinstance(healthy.error, ConnectionClosedOK) and healthy.error.rcvd.code == CloseCode.GOING_AWAY
    h.server.start("127.0.0.1", port)
    h.healthy = HealthyClient(h.url)
    h.healthy.start()
    h.keeps_working()
    h.finish()
    print(f"stop() with {count} clients and {in_flight} bytes in flight")


@pytest.mark.slow
def test_two_thousand_clients_vanishing_at_once(harness):
    """As when the Wi-Fi drops: every client closes at the same moment. Each
    is closed exactly once, and no poll step asks the poller for more than
    MAX_EVENTS ready sockets (so no step grows with the number ready)."""
    count = 2000
    raise_open_file_limit(2 * count + 200)
    h = harness(max_connections=count + 10, heartbeat_interval=None)
    reactor = h.server.reactor
    asked: list[int] = []
    select = reactor.poller.select

    def counted_select(timeout: float, max_events: int) -> list:
        found = select(timeout, max_events)
        asked.append(max_events)
        assert len(found) <= max_events
        return found

    reactor.poller.select = counted_select  # type: ignore[method-assign]
    swarm = Swarm(h.url)
    swarm.start()
    try:
        swarm.call(swarm.open, count, *h.address)
        h.pump(lambda: sum(c.opened for c in swarm.clients) == count, 60, "every client open")
    finally:
        swarm.stop()
    h.pump(lambda: len(h.recorder.opened) == count + 1, what="on_open for every client")
    asked.clear()
    for client in swarm.clients:
        client.sock.close()
    h.pump(lambda: len(h.recorder.closed) == count, 60, "on_client_closed for every client")
    assert max(asked) <= reactor.MAX_EVENTS
    assert len(asked) >= count // reactor.MAX_EVENTS  # spread over many steps
    h.finish()
