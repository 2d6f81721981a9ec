"""Thousands of idle WebSocket clients: memory per connection, idle CPU, and
the largest ``poll()`` step while heartbeats go out.

    python bench/idle.py                          # 10,000 clients, 60 s idle, heartbeat every 20 s
    python bench/idle.py --clients 2000 --idle 20 --heartbeat 5
    python bench/idle.py --server websockets      # the same against python-websockets' asyncio server
    python bench/idle.py --deflate                # clients negotiate permessage-deflate and each echo one message

The server runs in its own process (``Server(max_connections=...)``, pumped
by a plain ``poll()`` loop that records the CPU time of every step). A
second process opens the clients on loopback, completes each handshake,
then only answers the server's Pings with Pongs, as a browser tab would.
With ``--deflate`` every client offers permessage-deflate as Chromium does
and has one compressed 1 KiB JSON message echoed (compressed) before going
quiet, so that the server made zlib state for each; the figures then also
show memory after the idle period, when that state must be gone.

Figures:

* memory per connection: the server's resident set after the clients
  connected, less before, divided by the count (kernel socket buffers are
  not in it: they are the kernel's). Before each reading the server asks
  glibc to give free heap pages back (``malloc_trim``), so that memory let
  go shows;
* idle CPU: the server's CPU time over the idle period, as a share of one
  core, first with heartbeats off (nothing to do: it must be about 0), then
  with heartbeats on;
* the largest step: the most CPU time one ``poll()`` call took while the
  heartbeats of every client went out.

Each process needs a descriptor per client: both raise their soft
``RLIMIT_NOFILE`` to the hard limit, and the run stops with a message if
that is too low (``ulimit -n``).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
PONG_MASK = b"\x11\x22\x33\x44"


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"{needed} descriptors needed, the hard limit is {hard}: raise it (ulimit -Hn) first")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_bytes() -> int:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # free heap pages back to the system (glibc)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# What a --deflate client offers (as Chromium does), and the message it has echoed.
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
DEFLATE_TEXT = json.dumps([{"id": i, "name": f"item {i}", "on": i % 2 == 0} for i in range(28)]).encode()[:1024]


def deflate_frame() -> bytes:
    """The masked, compressed text frame each --deflate client sends."""
    import zlib

    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (compressor.compress(DEFLATE_TEXT) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert 126 <= len(payload) < 65536
    masked = bytes(b ^ PONG_MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0xC1, 0x80 | 126)) + len(payload).to_bytes(2, "big") + PONG_MASK + masked


# --------------------------------------------------------------------------
# the server process


def serve(clients: int, heartbeat: float | None) -> None:
    raise_descriptor_limit(clients + 256)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import wsserver

    server = wsserver.Server(max_connections=clients + 64, heartbeat_interval=heartbeat, heartbeat_timeout=heartbeat)
    server.on_message = lambda client, message: client.send(message.data)
    server.start(HOST, 0, backlog=4096)
    stats = {"max_step": 0.0, "steps": 0}

    def report(_signum, _frame) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({
            "rss": rss_bytes(),
            "cpu": usage.ru_utime + usage.ru_stime,
            "connections": server.connection_count(),
            **stats,
        }), flush=True)
        stats["max_step"], stats["steps"] = 0.0, 0

    signal.signal(signal.SIGUSR1, report)
    print(f"PORT {server.get_local_ip()[1]}", flush=True)
    while True:
        before = time.thread_time()
        server.poll(1.0)
        step = time.thread_time() - before
        stats["steps"] += 1
        if step > stats["max_step"]:
            stats["max_step"] = step


def serve_websockets(clients: int, heartbeat: float | None) -> None:
    """The same, served by python-websockets' asyncio server, for comparison
    (its steps are not timed: asyncio has no poll() of its own)."""
    raise_descriptor_limit(clients + 256)
    import asyncio

    import websockets
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass  # the clients' process ends without closing handshakes

    async def main() -> None:
        async with serve(handler, HOST, 0, ping_interval=heartbeat, ping_timeout=heartbeat, backlog=4096) as server:

            def report() -> None:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                stats = {"rss": rss_bytes(), "cpu": usage.ru_utime + usage.ru_stime, "connections": len(server.connections)}
                print(json.dumps({**stats, "max_step": 0.0, "steps": 0}), flush=True)

            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report)
            print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --------------------------------------------------------------------------
# the clients' process


def run_clients(port: int, count: int, seconds: float, deflate: bool) -> None:
    """Open ``count`` clients (with ``deflate``, each has one compressed
    message echoed), say so, answer Pings with Pongs for ``seconds``, then
    report how many Pings came and whether every client is still connected."""
    raise_descriptor_limit(count + 256)
    selector = selectors.DefaultSelector()
    request_head = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    if deflate:
        request_head += DEFLATE_OFFER
    message = deflate_frame() if deflate else b""
    echoed = 0
    opened = 0
    upgraded = 0
    pings = 0
    lost = 0
    batch = 256
    buffers: dict[socket.socket, bytes] = {}

    def open_some() -> None:
        nonlocal opened
        for _ in range(min(batch, count - opened)):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((HOST, port))
            selector.register(sock, selectors.EVENT_WRITE)
            buffers[sock] = b""
            opened += 1

    def serve_events(timeout: float) -> None:
        nonlocal upgraded, pings, lost, echoed
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            if key.events & selectors.EVENT_WRITE:
                key_text = base64.b64encode(os.urandom(16)).decode()
                sock.send((request_head + f"Sec-WebSocket-Key: {key_text}\r\n\r\n").encode())
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
                buffers.pop(sock)
                lost += 1
                continue
            pending = buffers[sock] + data
            if pending.startswith(b"HTTP/"):
                head, sep, pending = pending.partition(b"\r\n\r\n")
                if not sep:
                    buffers[sock] = head
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    raise SystemExit(f"upgrade refused: {head[:80]!r}")
                if deflate:
                    if b"permessage-deflate" not in head:
                        raise SystemExit("the server declined permessage-deflate")
                    sock.send(message)
                upgraded += 1
            # Frames from the server: Pings (answered) and, with --deflate, the
            # echo are all an idle client gets.
            while len(pending) >= 2:
                opcode, length, head = pending[0] & 0x0F, pending[1] & 0x7F, 2
                if length == 126:
                    if len(pending) < 4:
                        break
                    length, head = int.from_bytes(pending[2:4], "big"), 4
                if len(pending) < head + length:
                    break
                payload, pending = pending[head : head + length], pending[head + length :]
                if opcode == 0x9:
                    pings += 1
                    masked = bytes(b ^ PONG_MASK[i % 4] for i, b in enumerate(payload))
                    sock.send(bytes((0x8A, 0x80 | length)) + PONG_MASK + masked)
                elif opcode == 0x1:
                    echoed += 1
            buffers[sock] = pending

    deadline = time.monotonic() + 120
    while upgraded < count or (deflate and echoed < count):
        if opened - upgraded - lost < batch and opened < count:
            open_some()
        serve_events(0.1)
        if lost or time.monotonic() > deadline:
            raise SystemExit(f"only {upgraded} of {count} clients connected ({lost} lost)")
    print(f"CONNECTED {upgraded}", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        serve_events(max(0.0, min(1.0, end - time.monotonic())))
    print(json.dumps({"pings": pings, "lost": lost}), flush=True)


# --------------------------------------------------------------------------
# the orchestrator


def measure(name: str, clients: int, idle: float, heartbeat: float | None, deflate: bool) -> dict:
    """One server, ``clients`` clients, ``idle`` seconds of quiet."""
    here = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, here, "serve", name, str(clients), str(heartbeat or 0)], stdout=subprocess.PIPE, text=True)
    client_process = None
    try:
        port = int(server.stdout.readline().split()[1])

        def stats() -> dict:
            server.send_signal(signal.SIGUSR1)
            return json.loads(server.stdout.readline())

        before = stats()
        started = time.monotonic()
        client_process = subprocess.Popen(
            [sys.executable, here, "clients", str(port), str(clients), str(idle), "deflate" if deflate else ""],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = client_process.stdout.readline()
        if not line.startswith("CONNECTED"):
            raise SystemExit(f"the clients did not connect: {line!r}")
        connect_seconds = time.monotonic() - started
        connected = stats()
        report = json.loads(client_process.stdout.readline())  # when the idle period is over
        after = stats()
    finally:
        for process in (client_process, server):
            if process is not None:
                process.kill()
                process.wait()
    return {
        "connect_seconds": connect_seconds,
        "connections": connected["connections"],
        "per_connection": (connected["rss"] - before["rss"]) / clients,
        "per_connection_after": (after["rss"] - before["rss"]) / clients,
        "rss": (before["rss"], connected["rss"], after["rss"]),
        "cpu_share": (after["cpu"] - connected["cpu"]) / idle,
        "steps": after["steps"],
        "max_step": after["max_step"],
        **report,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serving = serve if sys.argv[2] == "wsserver" else serve_websockets
        serving(int(sys.argv[3]), float(sys.argv[4]) or None)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        run_clients(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "deflate")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle period (default 60)")
    parser.add_argument("--heartbeat", type=float, default=20.0, help="heartbeat_interval of the second run (default 20)")
    parser.add_argument("--server", choices=("wsserver", "websockets"), default="wsserver", help="websockets: its asyncio server, to compare")
    parser.add_argument("--deflate", action="store_true", help="clients negotiate permessage-deflate and have one message echoed")
    args = parser.parse_args()
    n = args.clients
    for heartbeat in (None, args.heartbeat):
        r = measure(args.server, n, args.idle, heartbeat, args.deflate)
        label = f"{args.server}, " + ("heartbeats off" if heartbeat is None else f"heartbeat every {heartbeat:g} s")
        label += ", permessage-deflate" if args.deflate else ""
        print(f"{label}: {n} clients connected in {r['connect_seconds']:.1f} s (server counts {r['connections']})")
        rss = " -> ".join(f"{x / 2**20:.1f}" for x in r["rss"])
        print(
            f"  memory per connection {r['per_connection'] / 1024:.2f} KiB once connected, "
            f"{r['per_connection_after'] / 1024:.2f} KiB after the idle period (resident set {rss} MiB)"
        )
        print(
            f"  over {args.idle:g} s idle: CPU {100 * r['cpu_share']:.2f} % of a core, {r['steps']} poll() steps, "
            f"largest {r['max_step'] * 1e3:.2f} ms; {r['pings']} Pings answered, {r['lost']} clients lost"
        )


if __name__ == "__main__":
    main()
