"""Does one flooding client delay the others? (A benchmark, not a test.)

    python bench/fairness.py                        # wsserver and websockets, 3 rounds
    python bench/fairness.py --servers wsserver --rounds 1

Each server runs in its own process (``throughput.py serve NAME echo-32``:
an echo on ``serve_forever()`` or asyncio). Two separate flooder processes
each pipeline masked 60-byte text frames on one connection as fast as the
socket takes them, reading the echoes as they come. Meanwhile a normal
``websockets`` client makes 300 sequential echoes and records each round
trip. The same client runs once alone first. Everything is on loopback and
bounded in count and time.

Reported: the normal client's round trip alone and with the flooders
(median, p99, max) and the flooders' echoed messages per second. Target
(wsserver): the normal client's p99 under 10 ms with two flooders.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import select
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import throughput  # noqa: E402  (the server launcher and frame helpers)

HOST = "127.0.0.1"
FLOOD_SECONDS = 8.0
ECHOES = 300
FLOODERS = 2


def flood(port: int, seconds: float, announce: bool = False) -> dict[str, float]:
    """One flooding connection for ``seconds`` (with ``announce``, print
    "flooding" once echoes flow); return the echoed messages per second."""
    sock = socket.create_connection((HOST, port))
    request, _ = throughput.handshake_request(port)
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    leftover = len(head.split(b"\r\n\r\n", 1)[1])
    frame = throughput.masked_frame(1, b"f" * 60, os.urandom(4))
    echo_size = 2 + 60
    batch = frame * 256
    sock.setblocking(False)
    received = leftover
    announced = False
    started = time.monotonic()
    pending = memoryview(batch)
    while time.monotonic() - started < seconds:
        readable, writable, _ = select.select([sock], [sock], [], 0.1)
        if readable:
            data = sock.recv(1 << 20)
            if not data:
                break
            received += len(data)
            if announce and not announced:
                print("flooding", flush=True)
                announced = True
        if writable:
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                sent = 0
            pending = pending[sent:] or memoryview(batch)
    elapsed = time.monotonic() - started
    sock.close()
    return {"echoed_per_s": received / echo_size / elapsed}


def echo_rounds(url: str, count: int) -> list[float]:
    from websockets.sync.client import connect

    rtts = []
    with connect(url, compression=None) as ws:
        for n in range(count):
            started = time.perf_counter()
            ws.send(f"normal {n}")
            assert ws.recv(timeout=30) == f"normal {n}"
            rtts.append((time.perf_counter() - started) * 1000)
    return rtts


def summary(rtts: list[float]) -> dict[str, float]:
    ordered = sorted(rtts)
    return {"median": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99) - 1], "max": ordered[-1]}


def run_server(name: str) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "throughput.py"), "serve", name, "echo-32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    flooders: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        if not select.select([server.stdout], [], [], 30)[0]:
            raise RuntimeError(f"{name} did not start within 30 s")
        port = int(server.stdout.readline().split()[1])
        url = f"ws://{HOST}:{port}/"
        alone = summary(echo_rounds(url, ECHOES))
        for _ in range(FLOODERS):
            flooders.append(
                subprocess.Popen([sys.executable, __file__, "flood", str(port), str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
            )
        for flooder in flooders:
            assert flooder.stdout is not None
            if flooder.stdout.readline().strip() != "flooding":
                raise RuntimeError("a flooder got no echo")
        loaded = summary(echo_rounds(url, ECHOES))
        rates = [json.loads(flooder.communicate(timeout=FLOOD_SECONDS + 30)[0])["echoed_per_s"] for flooder in flooders]
        return {"alone": alone, "loaded": loaded, "flooders_per_s": sum(rates)}
    finally:
        for process in [*flooders, server]:
            if process.poll() is None:
                process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="wsserver,websockets-asyncio")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for round_ in range(args.rounds):
        for name in args.servers.split(","):
            result = run_server(name)
            rows.append((round_ + 1, name, result))
            print(json.dumps({"round": round_ + 1, "server": name, **result}), flush=True)
    print()
    print("| round | server | alone: median / p99 ms | 2 flooders: median / p99 / max ms | flooders' echoes/s |")
    print("| --- | --- | --- | --- | --- |")
    for round_, name, r in rows:
        a, lo = r["alone"], r["loaded"]
        print(
            f"| {round_} | {name} | {a['median']:.2f} / {a['p99']:.2f} | {lo['median']:.2f} / {lo['p99']:.2f} / {lo['max']:.2f} | {r['flooders_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "flood":
        print(json.dumps(flood(int(sys.argv[2]), float(sys.argv[3]), announce=True)), flush=True)
    else:
        main()
