"""The data hot paths stay correct where they were made fast: writes gathered
per readiness event, bulk masking, and the copy-free paths of
``Connection.receive_data``."""

from __future__ import annotations

import select
import socket
import time

import pytest

from conftest import DEADLINE
from wsserver.reactor import Reactor, Stream

# -- writes gathered per readiness event --------------------------------------


class CountingSocket(socket.socket):
    """A real socket that counts its ``send`` calls."""

    sends = 0

    def send(self, data, flags=0):  # type: ignore[override]
        self.sends += 1
        return super().send(data, flags)


class Replier:
    """A StreamHandler that answers each chunk with ``replies(data)``."""

    def __init__(self, replies) -> None:
        self.replies = replies
        self.stream: Stream | None = None

    def data_received(self, data: memoryview) -> None:
        assert self.stream is not None
        self.replies(self.stream, bytes(data))

    def eof_received(self) -> None:
        pass

    def write_drained(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


@pytest.fixture
def reactor() -> Reactor:
    r = Reactor()
    yield r
    r.close()


def counted_pair(reactor: Reactor, replies) -> tuple[Stream, CountingSocket, socket.socket]:
    a, theirs = socket.socketpair()
    ours = CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    ours.setblocking(False)
    handler = Replier(replies)
    stream = Stream(reactor, ours, handler)
    handler.stream = stream
    return stream, ours, theirs


def read_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(DEADLINE)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "peer closed"
        data += chunk
    return data


def pump(reactor: Reactor, condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.poll(0.01)


def test_the_replies_to_one_read_leave_in_one_send(reactor: Reactor) -> None:
    def fifty_replies(stream: Stream, data: bytes) -> None:
        for i in range(50):
            stream.write(b"%02d:" % i, data)

    stream, ours, theirs = counted_pair(reactor, fifty_replies)
    theirs.sendall(b"ping")
    pump(reactor, lambda: ours.sends > 0)
    expected = b"".join(b"%02d:ping" % i for i in range(50))
    assert read_exactly(theirs, len(expected)) == expected
    assert ours.sends == 1
    assert stream.buffered_amount == 0
    theirs.close()


def test_a_write_outside_poll_is_sent_at_once(reactor: Reactor) -> None:
    stream, ours, theirs = counted_pair(reactor, lambda stream, data: None)
    stream.write(b"now")
    assert ours.sends == 1 and stream.buffered_amount == 0
    assert read_exactly(theirs, 3) == b"now"  # no poll in between
    theirs.close()


def test_poll_from_a_callback_first_sends_what_the_callback_wrote(reactor: Reactor) -> None:
    seen_by_peer = []

    def write_then_poll(stream: Stream, data: bytes) -> None:
        stream.write(b"before")
        reactor.poll(0)  # as Server.stop() does from a callback
        seen_by_peer.append(select.select([theirs], [], [], DEADLINE)[0] == [theirs])
        stream.write(b"after")

    stream, ours, theirs = counted_pair(reactor, write_then_poll)
    theirs.sendall(b"go")
    pump(reactor, lambda: seen_by_peer)
    assert seen_by_peer == [True]
    assert read_exactly(theirs, 11) == b"beforeafter"
    theirs.close()


def test_a_large_reply_still_goes_out_in_slices_in_order(reactor: Reactor) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, eight write slices

    def big_reply(stream: Stream, data: bytes) -> None:
        stream.write(b"head", payload, b"tail")

    stream, ours, theirs = counted_pair(reactor, big_reply)
    theirs.sendall(b"go")
    received = bytearray()
    theirs.setblocking(False)
    deadline = time.monotonic() + DEADLINE
    while len(received) < len(payload) + 8:
        assert time.monotonic() < deadline
        reactor.poll(0.01)
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            pass
    assert received == b"head" + payload + b"tail"
    assert ours.sends > 1  # one slice per send
    theirs.close()
