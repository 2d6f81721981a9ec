"""drivers/websocket.py: what the WebSocket driver promises over a real
socket, beyond the protocol unit tests.

Replies come before failures (events are handed out one at a time), data
queued before a Close goes out ahead of it, a raw Close from ``send_data``
closes the protocol too, and whole messages sent while a fragmented one is
being sent wait behind it instead of interleaving.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from conftest import DEADLINE, Recorder, Worker, count_polls, driver_of, pump_until
from rawws import client_frame, close_payload, open_websocket, read_frame
from wsserver import Client, Server
from wsserver.protocol import CloseCode, InvalidState, Opcode


def raw_exchange(server: Server, to_send: bytes, frames: int) -> list[tuple[int, bool, bytes]]:
    """Open a raw client, send ``to_send`` in one segment, and read ``frames`` frames back."""

    def client() -> list[tuple[int, bool, bytes]]:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(to_send)
            return [read_frame(sock) for _ in range(frames)]

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: not worker.is_alive(), what="the raw client")
    return worker.outcome()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "broken",
    [
        client_frame(Opcode.TEXT, b"bad", rsv=2),
        client_frame(0x5, b""),
        client_frame(Opcode.CONTINUATION, b"nothing to continue"),
    ],
    ids=["rsv-bit", "reserved-opcode", "bare-continuation"],
)
def test_the_reply_to_a_message_goes_out_before_the_close_for_a_broken_frame_behind_it(server: Server, broken: bytes) -> None:
    recorder = Recorder(server, echo=True)
    frames = raw_exchange(server, client_frame(Opcode.TEXT, b"Hello, world!") + broken, 2)
    assert frames[0] == (Opcode.TEXT, True, b"Hello, world!")
    opcode, _, payload = frames[1]
    assert opcode == Opcode.CLOSE and payload[:2] == close_payload(CloseCode.PROTOCOL_ERROR)
    pump_until(server, recorder.all_closed)
    assert [m.data for _, m in recorder.messages] == ["Hello, world!"]


def test_what_is_sent_before_close_goes_out_ahead_of_the_close_frame(server: Server) -> None:
    def on_message(client: Client, message: Any) -> None:
        client.send("one")
        client.send(b"two")
        client.close(4000, "after two")
        assert client.send("three") is False  # closing: nothing is queued

    server.on_message = on_message
    frames = raw_exchange(server, client_frame(Opcode.TEXT, b"go"), 3)
    assert frames == [(Opcode.TEXT, True, b"one"), (Opcode.BINARY, True, b"two"), (Opcode.CLOSE, True, close_payload(4000, b"after two"))]


def test_a_raw_close_frame_from_send_data_closes_the_protocol(server: Server) -> None:
    recorder = Recorder(server)
    after: list[Any] = []
    recorded = server.on_open

    def on_open(client: Client) -> None:
        recorded(client)
        assert client.send_data(close_payload(4001, b"raw"), opcode=Opcode.CLOSE)
        after.extend([client.is_connected, client.send("late"), client.send_data(b"x")])

    server.on_open = on_open

    def client() -> tuple[tuple[int, bool, bytes], bool]:
        with open_websocket(server.get_local_ip()) as sock:
            frame = read_frame(sock)
            sock.sendall(client_frame(Opcode.CLOSE, close_payload(4001, b"raw")))
            return frame, sock.recv(1) == b""  # the server then closes TCP

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: not worker.is_alive() and recorder.all_closed(), what="the closing handshake")
    assert worker.outcome() == ((Opcode.CLOSE, True, close_payload(4001, b"raw")), True)
    assert after == [False, False, False]
    assert (recorder.opened[0].close_code, recorder.opened[0].close_reason) == (4001, "raw")


def test_messages_sent_during_a_fragmented_message_wait_behind_it(server: Server) -> None:
    def on_open(client: Client) -> None:
        assert client.send_data("frag", opcode=Opcode.TEXT, fin=False)
        assert server.publish("whole, sent in between")
        assert client.send_data(b"ment", opcode=Opcode.CONTINUATION, fin=False)
        assert client.buffered_amount >= len("whole, sent in between")  # held, and counted
        assert client.send_data(b"ed", opcode=Opcode.CONTINUATION)

    server.on_open = on_open
    from websockets.sync.client import connect

    def client() -> list[Any]:
        with connect(server.get_url(), open_timeout=DEADLINE) as ws:
            return [ws.recv(timeout=DEADLINE), ws.recv(timeout=DEADLINE)]

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: not worker.is_alive(), what="the client")
    assert worker.outcome() == ["fragmented", "whole, sent in between"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda client: client.send_data(b"x", opcode=Opcode.CONTINUATION), InvalidState),
        (lambda client: client.send_data(b"x", opcode=0x3), ValueError),
        (lambda client: client.send_data(b"x" * 126, opcode=Opcode.PING), ValueError),
        (lambda client: client.send_data(b"\x03", opcode=Opcode.CLOSE), ValueError),
    ],
    ids=["continuation-with-nothing-to-continue", "reserved-opcode", "ping-over-125-bytes", "close-with-1-byte-payload"],
)
def test_frames_no_state_allows_are_refused_with_an_error(server: Server, call: Callable[[Client], Any], error: type[Exception]) -> None:
    recorder = Recorder(server)
    raised: list[BaseException] = []

    def on_open(client: Client) -> None:
        try:
            call(client)
        except Exception as exc:
            raised.append(exc)
        client.send("still open")

    server.on_open = on_open
    frames = raw_exchange(server, b"", 1)
    assert frames == [(Opcode.TEXT, True, b"still open")]
    assert len(raised) == 1 and isinstance(raised[0], error), raised
    assert not recorder.errors


def test_a_client_over_its_write_limit_is_not_heard_until_it_catches_up(make_server) -> None:
    """Its messages wait, unparsed, while it is over the mark; once it has
    drained they are handled, in order, and nothing is lost."""
    server = make_server(write_limit=64 * 1024, write_grace=None)
    handled: list[str] = []
    big = b"x" * (1024 * 1024)

    def on_message(client: Client, message: Any) -> None:
        handled.append(message.data)
        client.send(big if message.data == "fill" else message.data)

    server.on_message = on_message
    # A small kernel send buffer, so that the backlog stays in the server's own.
    server.on_open = lambda client: driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    may_read = threading.Event()

    def client() -> list[tuple[int, bool, bytes]]:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(client_frame(Opcode.TEXT, b"fill") + b"".join(client_frame(Opcode.TEXT, b"%d" % n) for n in range(5)))
            assert may_read.wait(DEADLINE)
            return [read_frame(sock) for _ in range(6)]

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: handled == ["fill"], what="the first message")
    (client_,) = server.clients()
    assert not client_.writable
    for _ in range(20):  # the rest has arrived by now, and waits
        server.poll(0.01)
    assert handled == ["fill"]
    may_read.set()
    pump_until(server, lambda: not worker.is_alive(), what="the client to read everything")
    assert worker.outcome() == [(Opcode.BINARY, True, big)] + [(Opcode.TEXT, True, b"%d" % n) for n in range(5)]
    assert handled == ["fill", "0", "1", "2", "3", "4"]


# -- fair turns ---------------------------------------------------------------


def test_one_step_hands_out_at_most_one_turn_of_a_burst(server: Server) -> None:
    """A thousand pipelined messages in one segment: each poll() step hands
    out at most EVENTS_PER_TURN of them, and every one arrives, in order."""
    from wsserver.drivers.websocket import EVENTS_PER_TURN

    polls = count_polls(server)
    seen: list[tuple[int, str]] = []
    server.on_message = lambda client, message: seen.append((len(polls), message.data))
    burst = b"".join(client_frame(Opcode.TEXT, b"%d" % n) for n in range(1000))

    def client() -> None:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(burst + client_frame(Opcode.CLOSE, close_payload(1000)))
            assert read_frame(sock)[0] == Opcode.CLOSE

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: not worker.is_alive(), what="the burst to be handled")
    worker.outcome()
    assert [data for _, data in seen] == [str(n) for n in range(1000)]
    per_step = collections.Counter(step for step, _ in seen)
    assert max(per_step.values()) <= EVENTS_PER_TURN, per_step.most_common(3)


def test_a_flooding_client_does_not_hold_up_another(server: Server) -> None:
    """While one client pipelines messages as fast as the socket takes them,
    another's message is handled within a few poll() steps, with at most a
    few turns' worth of the flood handled before it."""
    from wsserver.drivers.websocket import EVENTS_PER_TURN

    polls = count_polls(server)
    handled_at: dict[str, tuple[int, int]] = {}
    flood_handled = [0]
    flood_grew = threading.Condition()

    def on_message(client: Client, message: Any) -> None:
        if message.data.startswith("normal"):
            handled_at[message.data] = (len(polls), flood_handled[0])
        else:
            flood_handled[0] += 1
            if flood_handled[0] % EVENTS_PER_TURN == 0:
                with flood_grew:
                    flood_grew.notify_all()
        client.send(message.data)

    server.on_message = on_message
    stop = threading.Event()
    flooding = threading.Event()

    def flooder() -> None:
        frame = client_frame(Opcode.TEXT, b"f" * 60) * 500
        with open_websocket(server.get_local_ip()) as sock:
            sock.setblocking(False)
            while not stop.is_set():
                with contextlib.suppress(BlockingIOError):
                    sock.send(frame)
                with contextlib.suppress(BlockingIOError):
                    while sock.recv(1 << 20):
                        flooding.set()

    sent_at: dict[str, tuple[int, int]] = {}

    def normal() -> list[tuple[int, bool, bytes]]:
        with open_websocket(server.get_local_ip()) as sock:
            assert flooding.wait(DEADLINE)
            replies = []
            for n in range(20):
                # Each message goes in while the flood is being handled: two
                # more turns' worth of it since the last one (however the
                # threads happen to share the machine).
                with flood_grew:
                    flooded = flood_grew.wait_for(lambda n=n: flood_handled[0] >= 2 * (n + 1) * EVENTS_PER_TURN, DEADLINE)
                assert flooded, "the flooder was not flooding"
                sock.sendall(client_frame(Opcode.TEXT, b"normal %d" % n))
                # After the send: the message is in the server's socket by
                # now (this thread may wait for the GIL before noting it).
                sent_at[f"normal {n}"] = (len(polls), flood_handled[0])
                replies.append(read_frame(sock))
            return replies

    threads = [Worker(flooder), Worker(normal)]
    for t in threads:
        t.start()
    pump_until(server, lambda: not threads[1].is_alive(), what="the normal client's echoes")
    stop.set()
    pump_until(server, lambda: not threads[0].is_alive(), what="the flooder to stop")
    assert threads[1].outcome() == [(Opcode.TEXT, True, b"normal %d" % n) for n in range(20)]
    steps_waited = [handled_at[key][0] - sent_at[key][0] for key in sent_at]
    flood_before = [handled_at[key][1] - sent_at[key][1] for key in sent_at]
    assert max(steps_waited) <= 3, f"poll steps between sending and handling: {steps_waited}"
    assert max(flood_before) <= 3 * EVENTS_PER_TURN, f"flood messages handled first: {flood_before}"


def test_a_client_over_its_rate_is_paused_and_loses_nothing(make_server) -> None:
    server = make_server(max_messages_per_second=100)
    handled: list[str] = []
    server.on_message = lambda client, message: handled.append(message.data)

    def client() -> None:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(b"".join(client_frame(Opcode.TEXT, b"%d" % n) for n in range(300)))
            sock.sendall(client_frame(Opcode.CLOSE, close_payload(1000)))
            assert read_frame(sock)[0] == Opcode.CLOSE

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: len(handled) >= 100, what="the first second's burst")
    assert len(handled) < 300, "the rate limit held nothing back"
    pump_until(server, lambda: not worker.is_alive(), timeout=30, what="the rest, at the rate")
    worker.outcome()
    assert handled == [str(n) for n in range(300)]
