"""Soak: clients connect and disconnect in waves while the server publishes
numbered messages; every message must reach every client that was open for
it, in order, and the server's memory must return to its baseline.

The server runs on this thread, pumped by ``poll()`` as a GUI loop would;
the clients are ``websockets`` sans-I/O clients on one helper thread
(``tests/swarm.py``). Each wave opens ``batch`` new clients while the
previous ``batch`` close, so up to ``2 * batch`` are connected at once,
beside one resident client that stays from start to end (as a program's
long-lived clients do: its timers stay at the top of the reactor's heap).

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
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

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
    swarm = Swarm(server.get_url(), max_size=None, deflate=deflate)
    swarm.start()

    def pump(condition, what: str) -> None:
        nonlocal published
        while not condition():
            if time.monotonic() > give_up:
                raise TimeoutError(f"soak deadline passed waiting for {what}")
            if published < wave_quota:
                if not server.publish(message(published, deflate)):
                    result.problems.append(f"publish({published}) skipped a client")
                published += 1
            server.poll(0.001)
            result.peak_connected = max(result.peak_connected, server.client_count())

    def open_group(count: int = batch):
        first = len(swarm.clients)
        swarm.call(swarm.open, count, host, port)
        pump(lambda: len(swarm.clients) >= first + count, "the swarm to start its clients")
        return swarm.clients[first : first + count]

    def close_group(group) -> None:
        swarm.call(lambda: [swarm.close(c) for c in group])

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

        group = open_group()
        for wave in range(waves):
            wave_quota = published + per_wave
            pump(lambda: all(c.opened for c in group), f"wave {wave} to open")  # noqa: B023  (pump() calls it before the loop moves on)
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
