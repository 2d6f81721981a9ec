"""Soak: clients connect and disconnect in waves while the server publishes
numbered messages; every message must reach every client that was open for
it, in order, and the server's memory must return to its baseline.

The server runs on this thread, pumped by ``poll()`` as a GUI loop would;
the clients are ``websockets`` sans-I/O clients (``tests/swarm.py``) in a
process of their own (:class:`SwarmProcess`). On a thread of this process
their Python work (parsing frames, inflating messages), as heavy as the
server's, shared the server's GIL: each time the server let go of it (each
``send()`` and zlib call, three per client per compressed message) the
clients' thread took it, publishing one compressed message to 500 clients
took 80 ms instead of 20 to 30 on a 2-core machine, and the soak measured
the clients. Each wave opens ``batch`` new clients while the previous
``batch`` close, so up to ``2 * batch`` are connected at once, beside one
resident client that stays from start to end (as a program's long-lived
clients do: its timers stay at the top of the reactor's heap).

A client is "open for" message n when the server ran its ``on_open``
before publishing n and had not yet received its Close frame; it must
receive exactly those messages, in order, and nothing else. Memory is
measured with :mod:`tracemalloc` over the allocations made by the server's
code (``wsserver/``) that are still alive, after a warm-up wave (so that
one-time allocations, such as the selector's tables growing to their
working size, are part of the baseline) and again once every client is
gone. A leak per connection adds blocks (at least one per connection); the
bytes may also grow by a step of the server's connection tables, which
Python never shrinks and which churn can leave one resize above their
warm-up size, bounded by the peak number of connections and not by how
many came and went.

Run ``python bench/soak.py --waves 20`` for a longer soak; the test suite
runs a bounded one (``tests/test_soak.py``).
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import socket
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from swarm import Swarm, raise_open_file_limit
from wsserver import Client, Server

PAD = "." * 80


@dataclass
class SoakResult:
    connections: int = 0
    peak_connected: int = 0
    messages_published: int = 0
    deliveries_checked: int = 0
    baseline_bytes: int = 0
    baseline_blocks: int = 0
    after_bytes: int = 0
    after_blocks: int = 0
    peak_bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.connections} connections (up to {self.peak_connected} at once), "
            f"{self.messages_published} messages published, {self.deliveries_checked} deliveries checked in order, "
            f"server memory {self.baseline_bytes} B in {self.baseline_blocks} blocks at baseline, "
            f"{self.after_bytes} B in {self.after_blocks} blocks after (process peak {self.peak_bytes} B), "
            f"in {self.seconds:.1f} s"
        )


# With --deflate, messages long enough to be compressed (the server's
# threshold is 128 bytes), and JSON-like, as a program's would be.
DEFLATE_PAD = ',"state":{"label":"value","items":[1,2,3],"on":true}' * 6


def message(n: int, deflate: bool = False) -> str:
    return f"{n:07d}{DEFLATE_PAD if deflate else PAD}"


class RemoteClient:
    """This process's view of one client of a :class:`SwarmProcess`: what
    the soak reads of a ``SwarmClient``. ``opened`` and ``tcp_closed`` follow
    the client as :meth:`SwarmProcess.update` hears of them; ``messages`` and
    ``close_code`` are filled in by :meth:`SwarmProcess.stop`."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.opened = False
        self.tcp_closed = False
        self.messages: list[str | bytes] = []
        self.close_code: int | None = None


class SwarmProcess:
    """A :class:`swarm.Swarm` run by another Python process (this file run
    with ``--swarm-process``), driven over a socket pair: commands go one
    way, news of clients that opened or lost their TCP connection the other,
    and at :meth:`stop` what every client received."""

    def __init__(self, url: str, deflate: bool) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, str(pathlib.Path(__file__).resolve()), "--swarm-process", str(theirs.fileno()), url, "1" if deflate else "0"],
                pass_fds=[theirs.fileno()],
            )
        self.conn = Connection(ours.detach())
        self.clients: list[RemoteClient] = []

    def open(self, count: int, host: str, port: int) -> list[RemoteClient]:
        """Start ``count`` connections; ``opened`` becomes true as their handshakes end."""
        new = [RemoteClient(len(self.clients) + i) for i in range(count)]
        self.clients += new
        self.conn.send(("open", count, host, port))
        return new

    def close(self, group: list[RemoteClient]) -> None:
        """Start the closing handshake of each client of ``group``."""
        self.conn.send(("close", [client.index for client in group]))

    def update(self) -> None:
        """Take in the news the swarm sent so far, without waiting."""
        while self.conn.poll():
            self._handle(self._receive())

    def stop(self) -> None:
        """Stop the swarm and take every client's messages and close code;
        raises what went wrong in the swarm."""
        try:
            self.conn.send(("stop",))
            while True:
                reply = self._receive()
                if reply[0] == "results":
                    break
                self._handle(reply)
            for client, (messages, close_code) in zip(self.clients, reply[1]):
                client.messages, client.close_code = messages, close_code
        finally:
            self.conn.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _receive(self) -> tuple:
        try:
            reply = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the swarm process ended (exit status {self.process.wait()})") from None
        if reply[0] == "error":
            raise RuntimeError(f"the swarm process failed: {reply[1]}")
        return reply

    def _handle(self, news: tuple) -> None:
        _, opened, closed = news
        for index in opened:
            self.clients[index].opened = True
        for index in closed:
            self.clients[index].tcp_closed = True


def serve_swarm(fd: int, url: str, deflate: bool) -> None:
    """The ``--swarm-process`` side of :class:`SwarmProcess`: a Swarm on its
    helper thread, which reports the clients that opened or lost their TCP
    connection after each step; this thread runs the commands."""
    conn = Connection(fd)

    class ReportingSwarm(Swarm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.opened: list[int] = []  # since the last news sent
            self.closed: list[int] = []

        def step(self, timeout: float = 0.0) -> None:
            super().step(timeout)
            if self.opened or self.closed:
                conn.send(("news", self.opened, self.closed))
                self.opened, self.closed = [], []

        def _read(self, client) -> None:
            was_open = client.opened
            super()._read(client)
            if client.opened and not was_open:
                self.opened.append(client.index)

        def _lost(self, client) -> None:
            was_closed = client.tcp_closed
            super()._lost(client)
            if not was_closed:
                self.closed.append(client.index)

    swarm = ReportingSwarm(url, max_size=None, deflate=deflate)
    swarm.start()
    try:
        while True:
            try:
                command, *args = conn.recv()
            except EOFError:  # the soak is gone
                swarm.stop()
                return
            if command == "open":
                swarm.call(swarm.open, *args)
            elif command == "close":
                group = [swarm.clients[index] for index in args[0]]
                swarm.call(lambda group=group: [swarm.close(client) for client in group])
            else:  # stop
                break
        swarm.stop()
    except Exception as exc:
        conn.send(("error", repr(exc)))
        raise
    conn.send(("results", [(client.messages, client.close_code) for client in swarm.clients]))
    conn.close()


def soak(batch: int = 500, waves: int = 4, per_wave: int = 150, deadline: float = 60.0, deflate: bool = False) -> SoakResult:
    """Run the soak; return its figures and every problem found. With
    ``deflate`` the clients negotiate permessage-deflate and the messages
    are compressed, each client's with its own context."""
    raise_open_file_limit(4 * batch + 200)
    result = SoakResult()
    started = time.monotonic()
    give_up = started + deadline
    tracemalloc.start()
    server = Server()
    # Swarm client index -> [first message, end]. Keyed by a number of our
    # own, not the request's path string, which would keep the server's
    # allocation alive and show up as a leak.
    spans: dict[int, list[int]] = {}
    published = 0

    def on_open(client: Client) -> None:
        spans[int(client.request.path[2:])] = [published, -1]

    def on_close(client: Client, code: int, reason: str) -> None:
        spans[int(client.request.path[2:])][1] = published

    server.on_open = on_open
    server.on_close = on_close
    server.on_error = lambda client, exc: result.problems.append(f"on_error {client}: {exc!r}")
    server.start("127.0.0.1", 0)
    host, port = server.get_local_ip()
    swarm = SwarmProcess(server.get_url(), deflate)

    def pump(condition, what: str) -> None:
        nonlocal published
        while not condition():
            if time.monotonic() > give_up:
                raise TimeoutError(f"soak deadline passed waiting for {what}")
            swarm.update()
            if published < wave_quota:
                if not server.publish(message(published, deflate)):
                    result.problems.append(f"publish({published}) skipped a client")
                published += 1
            server.poll(0.001)
            result.peak_connected = max(result.peak_connected, server.client_count())

    def open_group(count: int = batch) -> list[RemoteClient]:
        return swarm.open(count, host, port)

    def close_group(group: list[RemoteClient]) -> None:
        swarm.close(group)

    def measure() -> tuple[int, int]:
        """Bytes and blocks allocated by the server's code and still alive."""
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/wsserver/*")])
        stats = snapshot.statistics("filename")
        return sum(stat.size for stat in stats), sum(stat.count for stat in stats)

    try:
        # One client stays connected from start to end, as a real program's
        # long-lived clients do (and its timers keep the reactor's heap busy).
        wave_quota = 0
        resident = open_group(1)
        pump(lambda: resident[0].opened, "the resident client to open")
        # Warm-up: as many clients at once as the waves will have, so that
        # tables sized by the peak (the selector's, the server's client
        # dict; Python never shrinks them) are part of the baseline. Then
        # the baseline, with only the resident client connected.
        wave_quota = per_wave
        group = open_group() + open_group()
        pump(lambda: all(c.opened for c in group), "warm-up clients to open")
        close_group(group)
        pump(lambda: server.client_count() == 1 and all(c.tcp_closed for c in group), "warm-up clients to close")
        # Ended for the application, and for the kernel: a gracefully closed
        # socket lingers until the client's FIN is read.
        pump(lambda: server.connection_count() == 1 and not server.reactor.lingering, "every warm-up connection to end")
        warm_up = len(swarm.clients)
        result.baseline_bytes, result.baseline_blocks = measure()

        # Each wave's messages are published while its group leaves and the
        # next one arrives: the first group too is open before its wave's
        # messages start, as every later one is (the turnover waits for it).
        # Published while it was still opening, they reached none of it.
        group = open_group()
        for wave in range(waves):
            pump(lambda: all(c.opened for c in group), f"wave {wave} to open")  # noqa: B023  (pump() calls it before the loop moves on)
            wave_quota = published + per_wave
            leaving, group = group, open_group()
            close_group(leaving)
            pump(lambda: all(c.tcp_closed for c in leaving) and all(c.opened for c in group), f"wave {wave} to turn over")  # noqa: B023  (likewise)
            result.peak_bytes = max(result.peak_bytes, tracemalloc.get_traced_memory()[0])
        wave_quota = published + per_wave
        pump(lambda: published >= wave_quota, "the last messages")
        close_group(group)
        pump(lambda: server.client_count() == 1 and all(c.tcp_closed for c in group), "the last clients to close")
        pump(lambda: server.connection_count() == 1 and not server.reactor.lingering, "every TCP connection to end")
        result.after_bytes, result.after_blocks = measure()
        close_group(resident)
        pump(lambda: server.client_count() == 0 and resident[0].tcp_closed, "the resident client to close")
    finally:
        swarm.stop()
        server.stop()
        tracemalloc.stop()

    result.messages_published = published
    result.connections = len(swarm.clients) - warm_up
    for client in swarm.clients:
        if client.index not in spans:
            result.problems.append(f"client {client.index} never opened")
            continue
        first, end = spans[client.index]
        expected = [message(n, deflate) for n in range(first, end)]
        if client.messages != expected:
            result.problems.append(f"client {client.index}: got {len(client.messages)} messages, expected {first}..{end - 1}")
        elif client.index >= warm_up:
            result.deliveries_checked += len(expected)
        if client.close_code != 1000:
            result.problems.append(f"client {client.index} closed with {client.close_code}")
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    if sys.argv[1:2] == ["--swarm-process"]:  # SwarmProcess's other side
        fd, url, deflate = sys.argv[2:]
        serve_swarm(int(fd), url, deflate == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=500, help="clients per wave (default 500)")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--per-wave", type=int, default=150, help="messages published per wave")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--deflate", action="store_true", help="clients negotiate permessage-deflate; messages are compressed")
    args = parser.parse_args()
    result = soak(args.batch, args.waves, args.per_wave, args.deadline, args.deflate)
    print(result.summary())
    for problem in result.problems[:20]:
        print("PROBLEM:", problem)
    sys.exit(1 if result.problems else 0)


if __name__ == "__main__":
    main()
