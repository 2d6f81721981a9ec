"""Ten thousand clients gone, or writable, at once: is any poll() step long? (A benchmark, not a test.)

    python bench/storm.py                  # 10,000 idle clients, then all closed at once
    python bench/storm.py --clients 2000 --reset
    python bench/storm.py --writable       # a publish() waits in 10,000 buffers; all drain at once

A separate process opens the clients (raw sockets, real handshakes, loopback
only) and, once they are all open, closes every one of them at once (FIN, or
RST with ``--reset``), as when a Wi-Fi network drops. This process runs the
server with ``poll()`` and records the wall and CPU time of every step until
``on_client_closed`` has run for each client.

With ``--writable``, the server first publishes a 64 KiB message that the
clients do not read (small kernel buffers on both sides keep most of it in
the server's buffers); then every client reads at once, and the storm is
10,000 sockets becoming writable, measured until every buffer is empty.

Reported: the CPU time the whole storm took, the number of steps, and the
longest step (wall and CPU). Target: under 3 s of CPU for 10,000, no step
over the budget plus one unit of work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


PUBLISHED = 64 * 1024


def clients(port: int, count: int, reset: bool) -> None:
    """The client process: open ``count`` WebSockets, say "open"; on a
    "drain" line read PUBLISHED bytes and more from each, say "drained"; on
    "drop" close them all at once, say "closed"."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, max(count + 100, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    sys.path.insert(0, HERE)
    from throughput import handshake_request

    request, _ = handshake_request(port)
    socks: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    while len(socks) < count or pending:
        while len(socks) < count and len(pending) < 64:  # 64 handshakes in flight
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            sock.setblocking(False)
            socks.append(sock)
            pending[sock] = b""
            selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(10):
            sock = key.fileobj  # type: ignore[assignment]
            pending[sock] += sock.recv(4096)
            if b"\r\n\r\n" in pending[sock]:
                assert pending[sock].startswith(b"HTTP/1.1 101"), pending[sock][:40]
                del pending[sock]
                selector.unregister(sock)
    print("open", flush=True)
    if sys.stdin.readline().strip() == "drain":
        left = {sock: PUBLISHED for sock in socks}
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        while left:
            for key, _ in selector.select(10):
                sock = key.fileobj  # type: ignore[assignment]
                left[sock] -= len(sock.recv(1 << 20))
                if left[sock] <= 0:
                    del left[sock]
                    selector.unregister(sock)
        print("drained", flush=True)
        sys.stdin.readline()
    for sock in socks:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    print("closed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--reset", action="store_true", help="close with RST instead of FIN")
    parser.add_argument("--writable", action="store_true", help="measure the drain of a publish() instead of the closes")
    args = parser.parse_args()
    count = args.clients
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 200, max(count + 200, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    sys.path.insert(0, os.path.dirname(HERE))
    import wsserver

    server = wsserver.Server(max_connections=count + 10, heartbeat_interval=None, handshake_timeout=60)
    closed = [0]
    server.on_client_closed = lambda client: closed.__setitem__(0, closed[0] + 1)
    # Small kernel send buffers, so that a publish() mostly waits in the server's.
    server.on_open = lambda client: client._state.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.start("127.0.0.1", 0)
    child = subprocess.Popen(
        [sys.executable, __file__, "--clients-process", str(server.get_local_ip()[1]), str(count), "1" if args.reset else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    os.set_blocking(child.stdout.fileno(), False)
    started = time.monotonic()
    while server.client_count() < count:
        server.poll(0.05)
        assert time.monotonic() - started < 300, f"only {server.client_count()} of {count} clients opened"
    while server.reactor.has_pending_work():
        server.poll(0)
    walls: list[float] = []
    cpus: list[float] = []

    def timed_poll() -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        server.poll(0.05)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.thread_time() - cpu)
        assert time.process_time() - cpu_started < 120, "the storm took over 2 minutes of CPU"

    if args.writable:
        server.publish(b"p" * PUBLISHED)
        waiting = sum(client.buffered_amount for client in server.clients())
        child.stdin.write("drain\n")
        child.stdin.flush()
        cpu_started = time.process_time()
        while any(client.buffered_amount for client in server.clients()):
            for _ in range(10):
                timed_poll()
        storm_cpu = time.process_time() - cpu_started
        child.stdin.write("drop\n")
        child.stdin.flush()
    else:
        child.stdin.write("drop\n")
        child.stdin.flush()
        cpu_started = time.process_time()
        while closed[0] < count:
            timed_poll()
        storm_cpu = time.process_time() - cpu_started
    child.communicate(timeout=60)
    server.shutdown()
    result: dict[str, object] = {
        "clients": count,
        "storm": "writable" if args.writable else "closed with RST" if args.reset else "closed with FIN",
        "cpu_s": round(storm_cpu, 3),
        "steps": len(walls),
        "max_step_wall_ms": round(max(walls) * 1000, 2),
        "max_step_cpu_ms": round(max(cpus) * 1000, 2),
        "p99_step_wall_ms": round(sorted(walls)[int(len(walls) * 0.99) - 1] * 1000, 2),
    }
    if args.writable:
        result["bytes_waiting_in_server_buffers"] = waiting
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clients-process":
        clients(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
