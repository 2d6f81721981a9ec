"""permessage-deflate's memory per connection, setting by setting, at 1,000 connections.

    python bench/deflate_memory.py                 # every setting, 1,000 connections each
    python bench/deflate_memory.py --clients 200   # quicker

For each setting a server is started in this process, with 1,000 raw
loopback clients that offer permessage-deflate as Chromium does
(``client_max_window_bits``). ``tracemalloc`` counts what the server's code
allocated, zlib's state included (zlib allocates through Python's raw
allocator, which ``tracemalloc`` traces), at three moments:

* connected: compression negotiated, nothing sent yet;
* after one message each way: every client sent a compressed 1 KiB JSON
  message and got it back compressed, so the server made its zlib state;
* idle: after ``idle_timeout`` (0.2 s here) went by twice, when state kept
  between messages must be gone.

The figures are per connection, less what a connection with compression
off holds at the same moment.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import sys
import time
import tracemalloc
import zlib
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import wsserver  # noqa: E402
from wsserver.protocol.deflate import Compression  # noqa: E402

HOST = "127.0.0.1"
MASK = b"\x11\x22\x33\x44"
OFFER = "permessage-deflate; client_max_window_bits"
TEXT = json.dumps([{"id": i, "name": f"item {i}", "on": i % 2 == 0} for i in range(28)]).encode()[:1024]

SETTINGS: list[tuple[str, Compression | None]] = [
    ("off (compression=None)", None),
    ("default: window 12, memLevel 5, client without context", Compression()),
    ("window 9, memLevel 5", Compression(server_max_window_bits=9)),
    ("window 10, memLevel 5", Compression(server_max_window_bits=10)),
    ("window 15, memLevel 5", Compression(server_max_window_bits=15)),
    ("window 12, memLevel 8", Compression(mem_level=8)),
    ("window 15, memLevel 8 (zlib's defaults)", Compression(server_max_window_bits=15, mem_level=8)),
    ("client keeps context, its window 15", Compression(client_no_context_takeover=False)),
    ("client keeps context, its window 12", Compression(client_no_context_takeover=False, client_max_window_bits=12)),
    ("no context either way", Compression(server_no_context_takeover=True)),
]


def client_frame(compressed: bool) -> bytes:
    """The 1 KiB JSON text frame a client sends: compressed, or as it is
    where compression is off."""
    payload = TEXT
    if compressed:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (compressor.compress(TEXT) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0xC1 if compressed else 0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big") + MASK + masked


def server_bytes() -> int:
    """Bytes allocated by wsserver's code (and the zlib state it made) that are still held."""
    gc.collect()  # what an earlier measurement left behind is not counted in this one
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, os.path.join(ROOT, "wsserver", "*"))])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def pump(server: wsserver.Server, condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        server.poll(0.01)


def drain(socks: list[socket.socket]) -> None:
    for sock in socks:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass


def measure(compression: Compression | None, clients: int) -> dict[str, float]:
    if compression is not None:
        # The same setting, with an idle time short enough to wait for.
        compression = Compression(**{**compression.__dict__, "idle_timeout": 0.2})
    server = wsserver.Server(compression=compression, max_connections=clients + 64, heartbeat_interval=None)
    echoed = [0]

    def on_message(client: wsserver.Client, message: wsserver.Message) -> None:
        client.send(message.data)
        echoed[0] += 1

    server.on_message = on_message
    server.start(HOST, 0, backlog=clients)
    port = server.get_local_ip()[1]
    base = server_bytes()
    socks: list[socket.socket] = []
    request = (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Extensions: {OFFER}\r\n\r\n"
    ).encode()
    for start in range(0, clients, 100):
        batch = []
        for _ in range(min(100, clients - start)):
            sock = socket.create_connection((HOST, port))
            sock.sendall(request)
            sock.setblocking(False)
            batch.append(sock)
        socks.extend(batch)
        wanted = len(socks)
        pump(server, lambda wanted=wanted: server.client_count() == wanted, "the handshakes")
    drain(socks)
    connected = server_bytes()
    frame = client_frame(compression is not None)
    for sock in socks:
        sock.sendall(frame)
    pump(server, lambda: echoed[0] == clients, "the echoes")
    drain(socks)
    after_message = server_bytes()
    drivers = list(server._context.websockets.values())
    if compression is not None:
        pump(server, lambda: not any(d.ws.deflate.holds_state for d in drivers), "the zlib state to be let go")
    else:
        deadline = time.monotonic() + 0.5
        pump(server, lambda: time.monotonic() > deadline, "0.5 s")
    idle = server_bytes()
    for sock in socks:
        sock.close()
    server.shutdown()
    return {key: (value - base) / clients for key, value in (("connected", connected), ("message", after_message), ("idle", idle))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * args.clients + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    tracemalloc.start()
    rows = [(label, measure(compression, args.clients)) for label, compression in SETTINGS]
    off = rows[0][1]
    print(f"Server memory per connection, KiB, at {args.clients} connections (tracemalloc), beyond compression off:\n")
    print("| setting | connected, nothing sent | after one message each way | idle |")
    print("| --- | --- | --- | --- |")
    for label, r in rows:
        if label == rows[0][0]:
            print(f"| {label} | {r['connected'] / 1024:.2f} (all of it) | {r['message'] / 1024:.2f} (all of it) | {r['idle'] / 1024:.2f} (all of it) |")
            continue
        cells = [(r[key] - off[key]) / 1024 for key in ("connected", "message", "idle")]
        print(f"| {label} | {cells[0]:+.2f} | {cells[1]:+.2f} | {cells[2]:+.2f} |")


if __name__ == "__main__":
    main()
