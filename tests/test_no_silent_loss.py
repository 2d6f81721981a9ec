"""No silent loss: while a connection is open, every message that
``send()``, ``send_data()`` or ``publish()`` takes (and every event an
``EventStream`` takes) is delivered, in order; a client that does not keep
up is not skipped but ends with a Close code that says why.

``write_limit`` is a high-water mark (``client.writable`` goes False above
it, and ``write_grace`` starts); ``max_write_buffer`` is the hard cap, and
the send that would pass it closes the client with 1008 instead of being
queued.

Slow clients are raw sockets that stop reading. The kernel buffers of a
loopback connection hold megabytes before the server's own buffer grows,
so the tests shrink them on both ends to see the server's marks at work.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from websockets.sync.client import connect

from conftest import DEADLINE, Worker, driver_of, pump_until, run_client
from rawhttp import read_response, request_bytes
from rawws import client_frame, close_payload, handshake_request
from swarm import Harness
from wsserver import Client, Server
from wsserver.http import Request
from wsserver.http.sse import EventStream
from wsserver.protocol import Opcode

MESSAGE = "m" * 1000
FRAME = 4 + 6 + len(MESSAGE)  # a numbered() message on the wire: a 4-byte header, 126..65535 bytes of payload

#: The most a Close frame adds to a client's backlog (2-byte header, at most
#: 125 bytes of payload): the Close frame that ends a client over its cap is
#: queued behind its backlog, so it may sit on top of a full buffer.
CLOSE_FRAME_MAX = 2 + 125

#: A 4 MiB text message: its echo alone is more than the default write_limit.
BIG = "0123456789abcdef" * (4 * 1024 * 1024 // 16)


def numbered(n: int) -> str:
    return f"{n:06d}" + MESSAGE


def summary(message: Any) -> str:
    """A message as an assertion shows it: never 4 MiB of text."""
    if message == BIG:
        return "the 4 MiB echo, intact"
    if len(message) <= 100:
        return message if isinstance(message, str) else repr(message)
    return f"{type(message).__name__} of {len(message)}, not the echo"


# -- raw clients -------------------------------------------------------------


def open_stalled_client(h: Harness, path: str = "/stalled") -> tuple[socket.socket, Client]:
    """A raw client that completes the handshake and then does not read;
    the kernel buffers on both ends are shrunk so the server's fills soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(h.address)
    count = len(h.recorder.opened)
    sock.sendall(handshake_request(path))
    h.pump(lambda: len(h.recorder.opened) > count, what="the stalled client's handshake")
    client = h.recorder.opened[-1]
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock, client


def let_it_read(sock: socket.socket, client: Client) -> None:
    """Undo the shrinking, for a stalled client that starts reading."""
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)


class FrameReader:
    """Reads a non-blocking raw client socket from the test thread and
    splits what arrives into server frames (unmasked, never fragmented)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.head_skipped = False  # the 101 response comes first
        self.frames: list[tuple[int, bytes]] = []
        self.eof = False

    def read(self) -> bool:
        """Take what is there; return whether the connection ended."""
        while not self.eof:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.buffer += chunk
        self._split()
        return self.eof

    def _split(self) -> None:
        buf = self.buffer
        if not self.head_skipped:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buf.startswith(b"HTTP/1.1 101 "), bytes(buf[:100])
            del buf[: end + 4]
            self.head_skipped = True
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            assert not b1 & 0x80, "a server frame is never masked"
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                (n,) = struct.unpack_from("!H", buf, 2)
                at = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                (n,) = struct.unpack_from("!Q", buf, 2)
                at = 10
            if len(buf) < at + n:
                return
            assert b0 & 0x80, "the server does not fragment its messages"
            self.frames.append((b0 & 0x0F, bytes(buf[at : at + n])))
            del buf[: at + n]

    def payloads(self, opcode: int = Opcode.TEXT) -> list[bytes]:
        return [payload for op, payload in self.frames if op == opcode]


# -- 1a: the scenario of the issue ---------------------------------------------



def assert_closed_for_not_reading(h: Any, client: Any) -> None:
    """The client was closed with 1008, once, and on_error was told why."""
    assert client.close_code == 1008
    assert h.recorder.closed[client.id] == 1
    assert any(c is client for c, _ in h.recorder.errors), "on_error was not told why the client was closed"

def test_publish_after_a_big_echo_arrives_after_it(harness) -> None:
    """The echo of a 4 MiB message alone puts the client over the default
    write_limit; a publish() in the same callback must still reach it,
    after the echo. Once the client has the echo it says so, and the server
    closes it: whatever was queued before the Close frame must have come."""
    h = harness(healthy=False)  # default limits
    returned: list[tuple[bool, bool]] = []

    def on_message(client: Client, message: Any) -> None:
        h.recorder.messages.append((client, message))
        if message.data == "got the echo":
            client.close(1000, "bye")
        else:
            returned.append((client.send(message.data), h.server.publish("status")))

    h.server.on_message = on_message

    def client() -> tuple[list[str], int | None]:
        got: list[str] = []
        with connect(h.url, max_size=None, open_timeout=DEADLINE, close_timeout=DEADLINE) as ws:
            ws.send(BIG)
            for message in ws:  # until the server's Close frame
                got.append(summary(message))
                if len(got) == 1:
                    ws.send("got the echo")
        return got, ws.close_code

    got, close_code = run_client(h.server, client)
    assert got == ["the 4 MiB echo, intact", "status"]
    assert close_code == 1000
    assert returned == [(True, True)], "send() or publish() did not take the message for an open client"
    assert [summary(m.data) for _, m in h.recorder.messages] == ["the 4 MiB echo, intact", "got the echo"]
    h.finish()


# -- 1b: write_limit is a high-water mark, not a refusal -----------------------


def test_send_never_refuses_an_open_client_and_every_message_arrives(harness) -> None:
    limit = 64 * 1024
    h = harness(write_limit=limit, write_grace=None)
    sock, client = open_stalled_client(h)
    assert client.writable is True and client.buffered_amount == 0
    sent = 0
    for n in range(5000):  # bounded: ~5 MB, far more than the kernels and 4 * limit hold
        taken = client.send(numbered(n))
        assert taken is True, f"send #{n} refused with {client.buffered_amount} bytes waiting"
        sent += 1
        if client.buffered_amount > limit:
            assert client.writable is False, f"writable with {client.buffered_amount} bytes waiting, over {limit}"
        h.server.poll(0)
        if client.buffered_amount > 4 * limit:
            break
    else:
        raise AssertionError(f"the server's buffer never went past 4 * write_limit ({client.buffered_amount})")
    assert client.is_connected and client.writable is False
    held = client.buffered_amount

    drains: list[tuple[bool, int]] = []  # (writable, buffered_amount) as on_drain saw them

    def on_drain(c: Client) -> None:
        if c is client:
            drains.append((c.writable, c.buffered_amount))

    h.server.on_drain = on_drain
    let_it_read(sock, client)
    reader = FrameReader(sock)
    h.pump(lambda: reader.read() or len(reader.frames) >= sent, what="the stalled client to read everything")
    assert [op for op, _ in reader.frames] == [Opcode.TEXT] * sent, reader.frames[-1:]
    payloads = reader.payloads()
    first_wrong = next((i for i, p in enumerate(payloads) if p != numbered(i).encode()), None)
    assert first_wrong is None, f"message {first_wrong} of {sent} is {payloads[first_wrong][:10]!r}"
    h.pump(lambda: client.buffered_amount == 0 and client.writable)
    # on_drain ran when the backlog fell to the low-water mark, with the
    # client already writable again (so on_drain can pace a sender by it).
    assert drains, f"on_drain never ran after {held} bytes drained"
    assert all(writable for writable, _ in drains), f"on_drain ran while client.writable was still False: {drains}"
    assert client.is_connected
    sock.close()
    h.finish()


# -- 1c: max_write_buffer is the hard cap --------------------------------------


def fill_to_the_cap(h: Harness, client: Client, cap: int) -> tuple[int, int, int]:
    """Send numbered messages to a client that does not read until one
    is not taken. Checks that every send is taken unless it would pass the
    cap, and that the buffer never holds more than the cap. Returns (how
    many were taken, the most held, the backlog just before the refused send)."""
    most_held = 0
    for n in range(cap // len(MESSAGE) + 20_000):  # bounded: the cap plus a few MB of kernel buffers
        before = client.buffered_amount
        taken = client.send(numbered(n))
        after = client.buffered_amount
        if not taken:
            assert before + FRAME > cap, f"send #{n} refused with {before} bytes waiting: {before + FRAME} would not pass the cap {cap}"
            assert not client.is_connected, "send() returned False but the client is still open"
            # Nothing of the refused message was queued; only the Close frame that ends the client.
            assert after <= before + CLOSE_FRAME_MAX, (before, after)
            return n, most_held, before
        assert after <= cap, f"send #{n} left {after} bytes waiting, past the cap {cap}"
        most_held = max(most_held, after)
    raise AssertionError(f"no send was refused; {client.buffered_amount} bytes wait, cap {cap}")


def test_a_send_past_max_write_buffer_closes_a_client_that_never_reads_with_1008(harness) -> None:
    limit, cap = 32 * 1024, 128 * 1024
    h = harness(write_limit=limit, max_write_buffer=cap, write_grace=None, close_timeout=0.5)
    assert h.server.max_write_buffer == cap
    sock, client = open_stalled_client(h)
    _, most_held, _ = fill_to_the_cap(h, client, cap)
    assert most_held > limit  # the high-water mark refused nothing
    assert client.send("after") is False
    assert h.server.send(client.id, "after") is False
    assert h.server.send_data(client, b"after") is False
    h.keeps_working()
    h.pump(lambda: client.is_closed, what="the capped client's TCP to be dropped after close_timeout")
    assert_closed_for_not_reading(h, client)
    sock.close()
    h.finish()


def test_a_client_closed_at_the_cap_still_gets_everything_taken_then_close_1008(harness) -> None:
    """The capped client's Close frame waits behind its backlog: a client
    that reads after all gets every message that was taken, in order, and
    then the Close frame with 1008; nothing in between is skipped."""
    limit, cap = 32 * 1024, 128 * 1024
    h = harness(write_limit=limit, max_write_buffer=cap, write_grace=None, close_timeout=DEADLINE)
    sock, client = open_stalled_client(h)
    taken, _, _ = fill_to_the_cap(h, client, cap)
    let_it_read(sock, client)
    reader = FrameReader(sock)
    h.pump(lambda: reader.read() or any(op == Opcode.CLOSE for op, _ in reader.frames), what="the Close frame")
    *messages, (close_op, close_body) = reader.frames
    assert close_op == Opcode.CLOSE, reader.frames[-1:]
    assert struct.unpack("!H", close_body[:2])[0] == 1008, close_body
    assert [op for op, _ in messages] == [Opcode.TEXT] * taken
    assert [p for _, p in messages] == [numbered(n).encode() for n in range(taken)]
    sock.setblocking(True)
    sock.sendall(client_frame(Opcode.CLOSE, close_payload(1008)))
    h.pump(lambda: client.is_closed, what="the closing handshake")
    assert client.close_code == 1008
    assert h.recorder.closed[client.id] == 1
    sock.close()
    h.finish()


def test_publish_closes_only_the_client_past_its_cap_and_the_others_get_everything(harness) -> None:
    """publish() is not skipped for a backlogged client: it queues for every
    open one, and returns False exactly when it closed one for going past
    its cap. The healthy client (paced on ``writable``) gets every message."""
    limit, cap = 32 * 1024, 128 * 1024
    h = harness(write_limit=limit, max_write_buffer=cap, write_grace=None, close_timeout=0.5)
    healthy = h.recorder.opened[0]
    sock, client = open_stalled_client(h)
    published = 0
    for n in range(cap // len(MESSAGE) + 20_000):  # bounded
        h.pump(lambda: healthy.writable, what="the healthy client to be writable")
        was_open = client.is_connected
        taken = h.server.publish(numbered(n))
        published += 1
        assert client.buffered_amount <= cap + CLOSE_FRAME_MAX
        if not client.is_connected:
            assert was_open and taken is False, "publish() closed the stalled client but returned True"
            break
        assert taken is True, f"publish #{n} returned False with every client still open"
    else:
        raise AssertionError("the stalled client never passed its cap")
    assert healthy.is_connected
    assert h.server.publish("after") is True  # every open client took it; the closing one is not open
    expected = [numbered(n) for n in range(published)] + ["after"]
    h.pump(lambda: len(h.healthy.broadcasts) >= len(expected) or h.healthy.error is not None, what="every broadcast")
    assert h.healthy.error is None, h.healthy.error
    assert h.healthy.broadcasts == expected
    h.pump(lambda: client.is_closed, what="the capped client's TCP to be dropped after close_timeout")
    assert client.close_code == 1008
    sock.close()
    h.finish()


@pytest.mark.parametrize("max_message_size", [64 * 1024, None])
def test_max_write_buffer_defaults_to_write_limit_plus_max_message_size(harness, max_message_size: int | None) -> None:
    limit = 32 * 1024
    cap = limit + (max_message_size if max_message_size is not None else 16 * 1024 * 1024)
    h = harness(write_limit=limit, max_message_size=max_message_size, write_grace=None, close_timeout=0.5)
    sock, client = open_stalled_client(h)
    _, _, before = fill_to_the_cap(h, client, cap)
    assert before > cap - 2 * FRAME, f"closed with {before} bytes waiting, well under the cap {cap}"
    h.pump(lambda: client.is_closed, what="the capped client's TCP to be dropped after close_timeout")
    assert client.close_code == 1008
    sock.close()
    h.finish()


# -- 1d: write_grace ----------------------------------------------------------


def test_a_client_over_write_limit_past_write_grace_is_closed_with_1008(harness) -> None:
    limit = 32 * 1024
    h = harness(write_limit=limit, write_grace=0.3, close_timeout=0.5)
    sock, client = open_stalled_client(h)
    for n in range(5000):  # bounded
        taken = client.send(numbered(n))
        assert taken is True, f"send #{n} refused with {client.buffered_amount} bytes waiting"
        if client.buffered_amount > limit:
            break
    else:
        raise AssertionError("the server's buffer never went past write_limit")
    # Going over the mark closes nothing by itself: the grace period starts.
    assert client.is_connected and client.writable is False
    h.pump(lambda: client.is_closed, what="the stalled client to be closed once write_grace passed")
    assert_closed_for_not_reading(h, client)
    sock.close()
    h.finish()


# -- 1e: EventStream ----------------------------------------------------------


class Feed:
    """A route at /events that keeps every stream it opens."""

    def __init__(self, server: Server) -> None:
        self.streams: list[EventStream] = []
        self.closed: list[EventStream] = []
        server.http_server.route("/events", handler=self.open)

    def open(self, request: Request) -> EventStream:
        stream = EventStream(on_close=self.closed.append)
        self.streams.append(stream)
        return stream


def open_stalled_event_stream(server: Server, feed: Feed) -> tuple[socket.socket, EventStream]:
    """A raw HTTP client that asks for /events and does not read; kernel buffers shrunk."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.get_local_ip())
    sock.sendall(request_bytes("GET", "/events"))
    pump_until(server, lambda: len(feed.streams) == 1, what="the event stream")
    (driver,) = server._context.connections  # the stream's HTTP connection, the only one
    driver.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock, feed.streams[0]


def event(n: int) -> str:
    return f"{n:06d} " + MESSAGE


def read_events(sock: socket.socket, count: int) -> list[str]:
    """Read the response head and then ``count`` events' data (blocking)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(DEADLINE)
    stream = sock.makefile("rb")
    head = read_response(stream, head_only=True)
    assert head.status == 200 and head.headers["transfer-encoding"] == "chunked", head.raw_head
    buffer = b""
    events: list[str] = []
    while len(events) < count:
        size = int(stream.readline(), 16)
        assert size, f"the stream ended after {len(events)} of {count} events"
        buffer += stream.read(size)
        assert stream.readline() == b"\r\n"
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            assert raw.startswith(b"data: "), raw[:40]
            events.append(raw[len(b"data: ") :].decode())
    return events


def test_an_event_stream_drops_no_event_for_a_slow_reader(make_server) -> None:
    limit = 64 * 1024
    server = make_server(write_limit=limit, write_grace=None)
    feed = Feed(server)
    sock, stream = open_stalled_event_stream(server, feed)
    sent = 0
    for n in range(5000):  # bounded: ~5 MB
        taken = stream.send(event(n))
        assert taken is True, f"event #{n} refused with {stream.buffered_amount} bytes waiting"
        sent += 1
        server.poll(0)
        if stream.buffered_amount > 4 * limit:
            break
    else:
        raise AssertionError(f"the stream's backlog never went past 4 * write_limit ({stream.buffered_amount})")
    assert not stream.closed and not feed.closed
    reader = Worker(read_events, sock, sent + 1)
    reader.start()
    assert stream.send("after the backlog") is True
    pump_until(server, lambda: not reader.is_alive(), what="the slow reader to read every event")
    got = reader.outcome()
    expected = [event(n) for n in range(sent)] + ["after the backlog"]
    first_wrong = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    assert first_wrong is None and len(got) == len(expected), f"event {first_wrong} of {sent + 1}: {got[first_wrong][:10]!r}"
    assert not stream.closed
    sock.close()


def test_an_event_stream_over_write_limit_past_write_grace_ends(make_server) -> None:
    limit = 32 * 1024
    server = make_server(write_limit=limit, write_grace=0.3, close_timeout=0.5)
    feed = Feed(server)
    sock, stream = open_stalled_event_stream(server, feed)
    for n in range(5000):  # bounded
        taken = stream.send(event(n))
        assert taken is True, f"event #{n} refused with {stream.buffered_amount} bytes waiting"
        server.poll(0)
        if stream.buffered_amount > limit:
            break
    else:
        raise AssertionError("the stream's backlog never went past write_limit")
    assert not stream.closed  # over the mark, within the grace period: still open
    pump_until(server, lambda: stream.closed, what="the stream to end once write_grace passed")
    assert feed.closed == [stream]  # on_close ran, once
    assert stream.send("too late") is False
    # The connection of a reader that never reads is not kept for ever.
    pump_until(server, lambda: server.connection_count() == 0, what="the stalled stream's connection to be dropped")
    sock.close()
