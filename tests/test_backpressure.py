"""Backpressure without loss: ``write_limit`` is a high-water mark that
refuses nothing (``client.writable`` goes False above it and ``on_drain``
follows once the client caught up), ``buffered_amount``, ``writable`` and
``on_drain`` let the application pace itself, ``max_write_buffer`` is the
hard cap whose crossing closes the client with 1008, a client that stays
over its limit past ``write_grace`` is closed with 1008, and ``publish()``
to a thousand clients with slow ones among them loses nothing for the fast
ones while the slow ones' buffers stay capped.

Slow clients are raw sockets that never read. The kernel buffers of a
loopback connection hold megabytes before the server's own buffer grows, so
the tests shrink the server side's send buffer of the slow connections
(``shrink_kernel_buffer``) to see the server's limit at work quickly.
"""

from __future__ import annotations

import itertools
import socket

import pytest
from websockets.sync.client import connect

from conftest import driver_of
from rawws import handshake_request
from swarm import Harness, Swarm, raise_open_file_limit
from wsserver import Client

MESSAGE = "m" * 1000

#: The most a Close frame adds to a backlog: the one that ends a client waits behind it.
CLOSE_FRAME_MAX = 2 + 125


def shrink_kernel_buffer(client: Client) -> None:
    """Make the server's kernel send buffer for ``client`` as small as Linux allows."""
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def let_it_read(sock: socket.socket, client: Client) -> None:
    """Undo :func:`shrink_kernel_buffer` and make ``sock`` non-blocking, for a stalled client that starts reading."""
    driver_of(client).stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)


def open_stalled_client(h: Harness, path: str = "/stalled") -> tuple[socket.socket, Client]:
    """A raw client that completes the handshake and then never reads."""
    sock = socket.create_connection(h.address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    count = len(h.recorder.opened)
    sock.sendall(handshake_request(path))
    h.pump(lambda: len(h.recorder.opened) > count)
    client = h.recorder.opened[-1]
    shrink_kernel_buffer(client)
    return sock, client


def fill_past(client: Client, amount: int) -> int:
    """Send until more than ``amount`` bytes wait for ``client``; every send
    must be taken (the client is open). Returns how many were sent."""
    for sent in range(1, amount // len(MESSAGE) + 10_000):  # bounded: the kernels hold a few MB at most
        taken = client.send(MESSAGE)
        assert taken is True, f"send() refused an open client with {client.buffered_amount} bytes waiting"
        if client.buffered_amount > amount:
            return sent
    raise AssertionError(f"the server's buffer never went past {amount} bytes ({client.buffered_amount})")


def test_sends_over_the_limit_are_queued_and_the_cap_bounds_memory(harness):
    limit, cap = 64 * 1024, 256 * 1024
    h = harness(write_limit=limit, max_write_buffer=cap, write_grace=None, close_timeout=0.5)
    sock, client = open_stalled_client(h)
    fill_past(client, limit)
    assert client.is_connected and client.writable is False
    most_held = 0
    for _ in range(cap // len(MESSAGE) + 10_000):  # bounded
        if not client.send(MESSAGE):
            break
        most_held = max(most_held, client.buffered_amount)
    else:
        raise AssertionError("the cap never closed a client that does not read")
    # The send that would have passed the cap was not queued: it closed the client.
    assert limit < most_held <= cap
    assert not client.is_connected
    held = client.buffered_amount
    assert held <= cap + CLOSE_FRAME_MAX  # its Close frame waits behind the backlog
    for _ in range(1000):
        assert client.send(MESSAGE) is False
        assert h.server.send(client.id, MESSAGE) is False
        assert h.server.send_data(client, b"x") is False
    # Every client that is open (the healthy one) took it; a closing one is not open.
    assert h.server.publish(MESSAGE) is True
    assert client.buffered_amount == held
    h.keeps_working()
    h.pump(lambda: client.is_closed, what="the capped client's TCP to be dropped after close_timeout")
    assert client.close_code == 1008
    sock.close()
    h.finish()


def test_on_drain_paces_a_sender_even_with_a_small_limit(harness):
    """The pacing contract: send while ``client.writable``; once it is False,
    ``on_drain(client)`` runs when the client can take more, with
    ``writable`` True again. Holds for limits below the reactor's write
    slice too, and keeps the backlog within the limit plus one message."""
    total = 400
    limit = 8 * 1024
    h = harness(write_limit=limit)
    state = {"next": 0, "stops": 0, "drains": 0, "refused": 0, "most_held": 0}
    writable_in_on_drain: list[bool] = []

    def pump_out(client: Client) -> None:
        while state["next"] < total and client.writable:
            if not client.send(f"{state['next']:05d}" + MESSAGE):
                state["refused"] += 1
                return
            state["next"] += 1
            state["most_held"] = max(state["most_held"], client.buffered_amount)
        if state["next"] < total:
            state["stops"] += 1

    def on_drain(client: Client) -> None:
        if client.request.path == "/paced":
            state["drains"] += 1
            writable_in_on_drain.append(client.writable)
            pump_out(client)

    def on_open(client: Client) -> None:
        h.recorder._on_open(client)
        if client.request.path == "/paced":
            shrink_kernel_buffer(client)
            pump_out(client)

    h.server.on_open = on_open
    h.server.on_drain = on_drain
    received: list[str] = []

    def read_all() -> None:
        # A small receive window too (set before connecting, so the
        # handshake offers it): otherwise the kernel may take all 400 KB
        # into the reader's buffer at once and the server never has to stop.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(h.server.get_local_ip())
        with connect(h.url + "paced", sock=sock, max_size=None, compression=None) as ws:  # bytes as sent: the backlog must build up
            while len(received) < total:
                received.append(ws.recv(timeout=10))

    from conftest import Worker

    reader = Worker(read_all)
    reader.start()
    try:
        h.pump(lambda: not reader.is_alive() or h.recorder.errors, what="paced reader")
    except AssertionError as exc:  # stalled: say where the pacing stopped
        raise AssertionError(f"{exc}; got {len(received)} of {total}, {state}, writable in on_drain: {writable_in_on_drain}") from None
    assert not h.recorder.errors, h.recorder.errors  # a callback raised
    reader.outcome()
    assert [int(m[:5]) for m in received] == list(range(total))
    assert state["refused"] == 0, state
    assert state["stops"] > 0 and state["drains"] >= state["stops"], state
    assert all(writable_in_on_drain), writable_in_on_drain
    assert state["most_held"] <= limit + len(MESSAGE) + 5 + 4, state
    h.finish()


def test_buffered_amount_tracks_the_unsent_bytes(harness):
    h = harness(write_limit=256 * 1024, write_grace=None)
    sock, client = open_stalled_client(h)
    assert client.buffered_amount == 0
    fill_past(client, 256 * 1024)
    assert client.buffered_amount > 256 * 1024
    let_it_read(sock, client)
    # Reading lets the server flush: the amount only goes down.
    drained = []

    def read_some() -> bool:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        drained.append(client.buffered_amount)
        return client.buffered_amount == 0

    h.pump(read_some, what="stalled client drained")
    assert all(a >= b for a, b in itertools.pairwise(drained))
    sock.close()
    h.finish()


def test_client_over_its_limit_past_the_grace_period_is_closed_with_1008(harness):
    h = harness(write_limit=32 * 1024, write_grace=0.3, close_timeout=0.5)
    errors = h.recorder.errors
    sock, client = open_stalled_client(h)
    fill_past(client, 32 * 1024)
    # The application keeps offering messages, as a live feed would: an
    # open client takes every one of them, however far behind it is.
    refused = []

    def offer() -> bool:
        if client.is_connected and not client.send(MESSAGE):
            refused.append(client.buffered_amount)
        return client.is_closed

    h.pump(offer, what="stalled client dropped")
    assert not refused, f"send() refused an open client with {refused[0]} bytes waiting"
    # It never read, so the Close frame queued behind its backlog could not
    # reach it: TCP was dropped once close_timeout passed.
    assert client.close_code == 1008
    assert any(c is client for c, _ in errors)
    h.keeps_working()
    sock.close()
    h.finish()


def test_a_client_that_catches_up_within_the_grace_period_stays(harness):
    h = harness(write_limit=32 * 1024, write_grace=0.5)
    sock, client = open_stalled_client(h)
    fill_past(client, 32 * 1024)
    assert client.writable is False
    let_it_read(sock, client)
    got = bytearray()

    def read_some() -> bool:
        try:
            while chunk := sock.recv(65536):
                got.extend(chunk)
        except BlockingIOError:
            pass
        return client.buffered_amount == 0

    h.pump(read_some)
    grace_over = h.server.reactor.time() + 0.6
    h.pump(lambda: read_some() and h.server.reactor.time() > grace_over)
    assert client.is_connected and client.writable
    assert client.send("still here")
    h.pump(lambda: read_some() and got.endswith(b"still here"))
    sock.close()
    h.finish()


def test_closing_a_client_that_stays_stalled_drops_tcp_after_close_timeout(harness):
    h = harness(write_limit=1 << 20, write_grace=None, close_timeout=0.3)
    sock, client = open_stalled_client(h)
    fill_past(client, 1 << 20)
    client.close(1000, "bye")
    h.pump(lambda: client.is_closed, what="stalled client dropped after close_timeout")
    assert client.close_code == 1006  # the closing handshake never completed
    sock.close()
    h.finish()


@pytest.mark.slow
def test_publish_to_a_thousand_clients_with_slow_ones(harness):
    """Fast clients get every message in order; the slow ones are not
    skipped but closed with 1008 (past their cap, or once write_grace is
    over), and all the while their buffers together stay within the cap."""
    fast_count, slow_count, total = 990, 10, 100
    raise_open_file_limit(2 * (fast_count + slow_count) + 200)
    limit, cap = 16 * 1024, 32 * 1024
    # The slow ones' kernels take some 40-50 KB each before the server's
    # buffer grows, so 100 messages of 1 KB take them past their cap.
    h = harness(write_limit=limit, max_write_buffer=cap, write_grace=1.0, close_timeout=0.5)
    swarm = Swarm(h.url)
    swarm.start()
    try:
        swarm.call(swarm.open, fast_count, *h.address)
        h.pump(lambda: sum(c.opened for c in swarm.clients) == fast_count, 30, "fast clients open")
        slow = [open_stalled_client(h, "/slow") for _ in range(slow_count)]
        slow_clients = [client for _, client in slow]
        fast_clients = [c for c in h.server.clients() if c.request.path.startswith("/s") and c.request.path != "/slow"]
        assert len(fast_clients) == fast_count
        bound = (cap + CLOSE_FRAME_MAX) * slow_count
        most_held = 0  # the most the slow clients held together after any step
        for n in range(total):
            # Pace like an application would: publish when the fast clients
            # are writable (the slow ones are not waited for).
            h.pump(lambda: all(c.writable for c in fast_clients), what=f"fast clients writable before message {n}")
            open_before = [c for c in slow_clients if c.is_connected]
            taken = h.server.publish(f"{n:05d}" + MESSAGE)
            closed_by_it = [c for c in open_before if not c.is_connected]
            # False exactly when a client that was open did not take it (it went past its cap).
            assert taken is not bool(closed_by_it), (n, taken, len(closed_by_it))
            most_held = max(most_held, sum(c.buffered_amount for c in slow_clients))
            assert most_held <= bound, f"the slow clients hold {most_held} bytes after message {n}, over {bound}"
        h.pump(lambda: all(len(c.messages) >= total for c in swarm.clients), 30, "fast clients got every message")
        expected = [f"{n:05d}" + MESSAGE for n in range(total)]
        wrong = [c.index for c in swarm.clients if c.messages != expected]
        assert not wrong, f"{len(wrong)} fast clients did not get every message in order, e.g. /s{wrong[0]}"
        h.pump(lambda: all(c.is_closed for c in slow_clients), what="slow clients closed")
        assert [c.close_code for c in slow_clients] == [1008] * slow_count, f"most held together: {most_held} of {bound}"
        swarm.call(lambda: [swarm.close(c) for c in swarm.clients])
        h.pump(lambda: all(c.tcp_closed for c in swarm.clients), 30, "fast clients closed")
        assert {c.close_code for c in swarm.clients} == {1000}
    finally:
        swarm.stop()
    for sock, _ in slow:
        sock.close()
    h.finish()
