"""Backpressure: each client's unsent output is bounded by ``write_limit``,
``buffered_amount`` and ``on_drain`` let the application pace itself, a
client that stays over its limit is closed with 1008, and ``publish()`` to a
thousand clients with slow ones among them loses nothing for the fast ones.

Slow clients are raw sockets that never read. The kernel buffers of a
loopback connection hold megabytes before the server's own buffer grows, so
the tests shrink the server side's send buffer of the slow connections
(``shrink_kernel_buffer``) to see the server's limit at work quickly.
"""

from __future__ import annotations

import itertools
import socket

import pytest
from rawws import handshake_request
from swarm import Harness, Swarm, raise_open_file_limit
from websockets.sync.client import connect

from wsserver import Client

MESSAGE = "m" * 1000


def shrink_kernel_buffer(client: Client) -> None:
    """Make the server's kernel send buffer for ``client`` as small as Linux allows."""
    client._peer.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def let_it_read(sock: socket.socket, client: Client) -> None:
    """Undo :func:`shrink_kernel_buffer` and make ``sock`` non-blocking, for a stalled client that starts reading."""
    client._peer.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
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


def fill_until_refused(h: Harness, client: Client, limit: int) -> int:
    """Send until ``send()`` refuses; return how many were taken."""
    for taken in range(100_000):
        if not client.send(MESSAGE):
            return taken
    raise AssertionError("send() never refused a client that does not read")


def test_send_refuses_at_the_limit_and_memory_stays_bounded(harness):
    limit = 64 * 1024
    h = harness(write_limit=limit, write_grace=None)
    sock, client = open_stalled_client(h)
    fill_until_refused(h, client, limit)
    held = client.buffered_amount
    # A message may always go into the buffer while it is under the limit,
    # so the most it holds is the limit plus one frame.
    assert limit <= held < limit + len(MESSAGE) + 4
    for _ in range(1000):
        assert client.send(MESSAGE) is False
        assert h.server.send(client.id, MESSAGE) is False
        assert h.server.send_data(client, b"x") is False
    assert h.server.publish(MESSAGE) is False  # the healthy client took it, the stalled one did not
    assert client.buffered_amount == held
    h.keeps_working()
    sock.close()
    h.finish()
    assert client.close_code == 1006


def test_on_drain_paces_a_sender_even_with_a_small_limit(harness):
    """The pacing contract: after send() returned False, on_drain(client)
    runs once the client can take more. Holds for limits below the reactor's
    write slice too."""
    total = 400
    h = harness(write_limit=8 * 1024)
    state = {"next": 0, "refusals": 0, "drains": 0}

    def pump_out(client: Client) -> None:
        while state["next"] < total:
            if not client.send(f"{state['next']:05d}" + MESSAGE):
                state["refusals"] += 1
                return
            state["next"] += 1

    def on_drain(client: Client) -> None:
        if client.request.path == "/paced":
            state["drains"] += 1
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
        with connect(h.url + "paced", max_size=None) as ws:
            while len(received) < total:
                received.append(ws.recv(timeout=10))

    from conftest import Worker

    reader = Worker(read_all)
    reader.start()
    h.pump(lambda: not reader.is_alive(), what="paced reader")
    reader.outcome()
    assert [int(m[:5]) for m in received] == list(range(total))
    assert state["refusals"] > 0 and state["drains"] >= state["refusals"], state
    h.finish()


def test_buffered_amount_tracks_the_unsent_bytes(harness):
    h = harness(write_limit=256 * 1024, write_grace=None)
    sock, client = open_stalled_client(h)
    assert client.buffered_amount == 0
    fill_until_refused(h, client, 256 * 1024)
    assert client.buffered_amount >= 256 * 1024
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
    fill_until_refused(h, client, 32 * 1024)
    # The application keeps offering messages, as a live feed would; the
    # ones that fit after the kernel took a few bytes top the buffer up again.
    def offer() -> bool:
        client.send(MESSAGE)
        return client.is_closed

    h.pump(offer, what="stalled client dropped")
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
    fill_until_refused(h, client, 32 * 1024)
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
    assert client.is_connected
    assert client.send("still here")
    h.pump(lambda: read_some() and got.endswith(b"still here"))
    sock.close()
    h.finish()


def test_closing_a_client_that_stays_stalled_drops_tcp_after_close_timeout(harness):
    h = harness(write_limit=1 << 20, write_grace=None, close_timeout=0.3)
    sock, client = open_stalled_client(h)
    fill_until_refused(h, client, 1 << 20)
    client.close(1000, "bye")
    h.pump(lambda: client.is_closed, what="stalled client dropped after close_timeout")
    assert client.close_code == 1006  # the closing handshake never completed
    sock.close()
    h.finish()


@pytest.mark.slow
def test_publish_to_a_thousand_clients_with_slow_ones(harness):
    """Fast clients get every message in order; the slow ones never hold
    more than the limit plus one frame, and are closed with 1008 in the end."""
    fast_count, slow_count, total = 990, 10, 60
    raise_open_file_limit(2 * (fast_count + slow_count) + 200)
    limit = 16 * 1024
    h = harness(write_limit=limit, write_grace=1.0, close_timeout=0.5)
    swarm = Swarm(h.url)
    swarm.start()
    try:
        swarm.call(swarm.open, fast_count, *h.address)
        h.pump(lambda: sum(c.opened for c in swarm.clients) == fast_count, 30, "fast clients open")
        slow = [open_stalled_client(h, "/slow") for _ in range(slow_count)]
        slow_clients = [client for _, client in slow]
        fast_peers = [c._peer for c in h.server.clients() if c.request.path != "/slow"]
        frame_size = len(MESSAGE) + 10
        most_held = 0
        for n in range(total):
            # Pace like an application would: publish when the fast clients
            # have room (the slow ones are skipped once full).
            h.pump(lambda: all(p.stream.buffered_amount < limit for p in fast_peers))
            h.server.publish(f"{n:05d}" + MESSAGE)
            most_held = max(most_held, *(c.buffered_amount for c in slow_clients))
        h.pump(lambda: all(len(c.messages) >= total for c in swarm.clients), 30, "fast clients got every message")
        expected = [f"{n:05d}" + MESSAGE for n in range(total)]
        assert all(c.messages == expected for c in swarm.clients)
        assert most_held < limit + frame_size
        h.pump(lambda: all(c.is_closed for c in slow_clients), what="slow clients closed")
        assert all(c.close_code == 1008 for c in slow_clients)
        swarm.call(lambda: [swarm.close(c) for c in swarm.clients])
        h.pump(lambda: all(c.tcp_closed for c in swarm.clients), 30, "fast clients closed")
        assert {c.close_code for c in swarm.clients} == {1000}
    finally:
        swarm.stop()
    for sock, _ in slow:
        sock.close()
    h.finish()
