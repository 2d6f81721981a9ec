"""Server-Sent Events from a route: events as they are sent, the end of
the stream from either side, a bounded backlog for a client that does not
read, and no confusion with WebSocket clients."""

from __future__ import annotations

import socket
import threading
from typing import Any, BinaryIO

import pytest

from conftest import DEADLINE, Worker, pump_until
from rawhttp import connect, read_response, request_bytes
from wsserver import Server
from wsserver.http import Request
from wsserver.http.sse import EventStream


class Feed:
    """A route at /events that keeps every stream it opens."""

    def __init__(self, server: Server, **options: Any) -> None:
        self.streams: list[EventStream] = []
        self.closed: list[EventStream] = []
        self.options = options
        server.http_server.route("/events", handler=self.open)

    def open(self, request: Request) -> EventStream:
        stream = EventStream(on_close=self.closed.append, **self.options)
        self.streams.append(stream)
        return stream


def read_head(sock: socket.socket) -> tuple[BinaryIO, dict[str, str]]:
    stream = sock.makefile("rb")
    response = read_response(stream, head_only=True)
    assert response.status == 200
    return stream, response.headers


def read_chunk(stream: BinaryIO) -> bytes:
    """One chunk of the chunked body (b"" for the last one)."""
    size = int(stream.readline(), 16)
    data = stream.read(size)
    assert stream.readline() == b"\r\n"
    return data


def test_events_arrive_as_they_are_sent_and_close_ends_the_response(server: Server) -> None:
    feed = Feed(server, retry=1500)
    server.http_server.route("/after", handler=lambda request: "after")
    got: list[bytes] = []
    ready = threading.Event()

    def client() -> tuple[dict[str, str], bytes]:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(request_bytes("GET", "/events") + request_bytes("GET", "/after"))
            stream, headers = read_head(sock)
            ready.set()
            while chunk := read_chunk(stream):
                got.append(chunk)
            # The connection is kept alive: the pipelined request behind the stream gets its answer.
            follow = read_response(stream)
            return headers, follow.body

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: ready.is_set() and len(feed.streams) == 1)
    stream = feed.streams[0]
    assert stream.send("first")
    pump_until(server, lambda: len(got) == 2)
    assert stream.send("line one\nline two", event="update", id="7")
    pump_until(server, lambda: len(got) == 3)
    assert stream.comment("keep-alive")
    stream.close()
    assert not stream.send("too late") and stream.closed
    pump_until(server, lambda: not worker.is_alive())
    headers, follow = worker.outcome()
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and headers["transfer-encoding"] == "chunked"
    assert got == [b"retry: 1500\n\n", b"data: first\n\n", b"event: update\nid: 7\ndata: line one\ndata: line two\n\n", b": keep-alive\n\n"]
    assert follow == b"after"
    assert feed.closed == [stream]  # on_close ran once
    assert server.client_count() == 0  # an event stream is not a WebSocket client


def test_the_client_leaving_ends_the_stream(server: Server) -> None:
    feed = Feed(server)
    sock = connect(server.get_local_ip()[1])
    sock.sendall(request_bytes("GET", "/events"))
    pump_until(server, lambda: len(feed.streams) == 1)
    stream = feed.streams[0]
    assert stream.send("hello") and server.client_count() == 0
    sock.close()
    # The server notices when it reads the end of the connection, or when
    # a write fails: keep sending until the stream reports closed.
    pump_until(server, lambda: not stream.send("ping") or stream.closed, what="the stream to close")
    pump_until(server, lambda: feed.closed == [stream])
    assert stream.closed and not stream.send("after")


def test_a_client_that_does_not_read_is_ended_at_the_cap_not_skipped() -> None:
    """Every event is taken until one would pass max_write_buffer; that one
    ends the stream (on_close runs) instead of being dropped on a stream
    that stays open."""
    cap = 1024 * 1024
    server = Server(write_limit=64 * 1024, max_write_buffer=cap, write_grace=None)
    server.start("127.0.0.1", 0)
    feed = Feed(server)
    event = "x" * 8000
    try:
        sock = connect(server.get_local_ip()[1])
        sock.sendall(request_bytes("GET", "/events"))
        pump_until(server, lambda: len(feed.streams) == 1)
        stream = feed.streams[0]
        most_held = 0
        for _ in range(100_000):  # bounded: the kernel buffers are a few MiB at most
            if not stream.send(event):
                break
            most_held = max(most_held, stream.buffered_amount)
            server.poll(0)
        else:
            pytest.fail("the stream never ended")
        assert stream.closed and feed.closed == [stream]
        assert cap - len(event) - 100 < most_held <= cap
        assert not stream.send("after the end")
        pump_until(server, lambda: server.connection_count() == 0, what="the connection to be dropped")
        sock.close()
    finally:
        server.stop()


def test_stop_ends_event_streams_promptly() -> None:
    server = Server()
    server.start("127.0.0.1", 0)
    feed = Feed(server)
    ended = threading.Event()

    def client() -> None:
        with connect(server.get_local_ip()[1]) as sock:
            sock.sendall(request_bytes("GET", "/events"))
            stream, _ = read_head(sock)
            while read_chunk(stream):
                pass
            ended.set()

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: len(feed.streams) == 1)
    server.stop(timeout=DEADLINE)  # returns once the stream ended, not at the timeout
    worker.join(DEADLINE)
    assert ended.is_set() and feed.closed == feed.streams


def test_head_of_an_event_stream_route_closes_the_stream(server: Server) -> None:
    feed = Feed(server)
    with connect(server.get_local_ip()[1]) as sock:
        sock.sendall(request_bytes("HEAD", "/events"))
        pump_until(server, lambda: len(feed.closed) == 1)
        reader = Worker(read_response, sock.makefile("rb"), True)
        reader.start()
        pump_until(server, lambda: not reader.is_alive())
    assert reader.outcome().headers["content-type"] == "text/event-stream; charset=utf-8"


def test_an_on_close_that_raises_goes_to_on_error(server: Server) -> None:
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)

    def broken(stream: EventStream) -> None:
        raise RuntimeError("on_close failed")

    server.http_server.route("/events", handler=lambda request: EventStream(on_close=broken))
    with connect(server.get_local_ip()[1]) as sock:
        sock.sendall(request_bytes("HEAD", "/events"))
        pump_until(server, lambda: bool(errors))
    assert str(errors[0]) == "on_close failed"


def test_field_values_must_be_single_lines() -> None:
    stream = EventStream()
    with pytest.raises(ValueError):
        stream.send("data", event="two\nlines")
    with pytest.raises(ValueError):
        stream.send("data", id="a\rb")
    assert stream.send("carriage\r\nreturns\rtoo")
    assert next(stream) == b"data: carriage\ndata: returns\ndata: too\n\n"
    assert next(stream) is None  # nothing queued yet
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
