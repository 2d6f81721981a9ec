"""WebSocket throughput: wsserver against other Python servers, same load, same run.

    python bench/throughput.py                      # every server, every scenario
    python bench/throughput.py --quick              # shorter measurements
    python bench/throughput.py --servers wsserver,websockets-asyncio --scenarios echo-1m
    python bench/throughput.py --markdown results.md

Every server runs in its own process on 127.0.0.1 and is driven by the same
load process: a lean client on raw non-blocking sockets that sends
precomputed masked frames and counts the echoed bytes (the size of every
answer is known in advance, so it parses nothing after checking the first
answer on each connection byte for byte). The ``null`` server does no
WebSocket work at all (it counts incoming bytes and answers with
precomputed frames): its row is the ceiling of the load client on this
machine. Each row also shows the CPU the server and the client used during
the measurement, so a saturated client is visible.

Servers: wsserver pumped by ``serve_forever()`` and by a plain ``poll()``
loop, and ``wsserver-pure`` without its optional numpy accelerator;
python-websockets' asyncio and threaded servers; wsproto on a
``selectors`` loop; tornado; aiohttp. websockets, tornado and aiohttp ship
optional C accelerators (masking; aiohttp also a Cython frame reader);
the ``-pure`` rows run them with their pure-Python fallbacks. A server
whose package is not installed is skipped (``pip install -e '.[bench]'``
installs them).

Scenarios (``--scenarios``): ``echo-64t`` (64-byte ASCII text, 50
connections, 10 in flight on each), ``connect`` (open, upgrade, Close
handshake, end; 8 connections at a time), ``publish-200`` (one client's
64-byte messages broadcast to 200 clients), ``text-1m`` (1 MiB of ASCII
text, one at a time), ``echo-1m`` (1 MiB binary, one at a time), and
``echo-32``, ``echo-64k``, ``echo-8m`` (binary), ``text-64k`` (multi-byte
UTF-8), ``publish-100`` (1 KiB to 100 clients). ``json-64``, ``json-64k``
and ``json-1m`` echo JSON-like text uncompressed; ``deflate-64``,
``deflate-64k`` and ``deflate-1m`` echo the same with permessage-deflate,
and ``deflate-publish`` broadcasts 1 KiB of it to 100 clients. The load
client offers ``client_no_context_takeover`` (it compresses what it sends
once, in advance), so the server keeps its own context from message to
message; ``deflate-publish-shared`` also offers
``server_no_context_takeover``, with which a server can compress a
broadcast once for all. The client inflates and checks each connection's
first answer and counts the others by their frame headers. Only servers
that negotiate it (wsserver, websockets) run them. ``tls-echo-64t`` and
``tls-echo-64k`` are ``echo-64t`` and ``echo-64k`` over TLS (``wss://``, a
self-signed certificate made per run; wsserver and websockets run them).
msgs/s counts echoed (or
delivered) messages, or connections; MB/s is payload bytes per second in
one direction (10^6 bytes). "server µs/msg" is the CPU time the server
process spent per unit of work: on a shared machine it moves less than
the rates when other work competes for the CPU. The last table gives it
as a ratio to websockets' asyncio server with its C speedups (the default
install), for the first five scenarios, against the targets of the
performance work. ``--repeat N`` runs N interleaved rounds and shows
medians.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import select
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
# "Not now" from a non-blocking socket, plain or TLS.
_AGAIN = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BIG_LIMIT = 64 * 1024 * 1024  # message size and write-buffer limits given to every server

# --------------------------------------------------------------------------
# scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    size: int  # payload bytes per message
    text: str | None = None  # "ascii" or "mixed" (1- to 4-byte UTF-8) for text messages
    connections: int = 1  # connect: connections opened at a time
    window: int = 1  # messages in flight per connection (publish: of the sender)
    broadcast: bool = False
    connect: bool = False  # each unit is a connection: open, handshake, Close, gone
    deflate: str | None = None  # the permessage-deflate offer: messages compressed both ways
    tls: bool = False  # over wss://

    @property
    def unit(self) -> str:
        return "conn" if self.connect else "delivery" if self.broadcast else "msg"


# The load client's permessage-deflate offers: the server keeps its context
# from message to message, or compresses each message on its own.
CONTEXT = "permessage-deflate; client_no_context_takeover"
NO_CONTEXT = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

SCENARIOS = [
    Scenario("echo-64t", 64, text="ascii", connections=50, window=10),
    Scenario("connect", 0, connections=8, connect=True),
    Scenario("publish-200", 64, text="ascii", connections=200, window=8, broadcast=True),
    Scenario("text-1m", 1024 * 1024, text="ascii", connections=1, window=1),
    Scenario("echo-1m", 1024 * 1024, connections=1, window=1),
    Scenario("echo-32", 32, connections=50, window=16),
    Scenario("echo-64k", 64 * 1024, connections=4, window=4),
    Scenario("echo-8m", 8 * 1024 * 1024, connections=1, window=2),
    Scenario("text-64k", 64 * 1024, text="mixed", connections=4, window=4),
    Scenario("publish-100", 1024, connections=100, window=8, broadcast=True),
    Scenario("json-64", 64, text="json", connections=50, window=10),
    Scenario("json-64k", 64 * 1024, text="json", connections=4, window=4),
    Scenario("json-1m", 1024 * 1024, text="json", connections=1, window=1),
    Scenario("deflate-64", 64, text="json", connections=50, window=10, deflate=CONTEXT),
    Scenario("deflate-64k", 64 * 1024, text="json", connections=4, window=4, deflate=CONTEXT),
    Scenario("deflate-1m", 1024 * 1024, text="json", connections=1, window=1, deflate=CONTEXT),
    Scenario("deflate-publish", 1024, text="json", connections=100, window=8, broadcast=True, deflate=CONTEXT),
    Scenario("deflate-publish-shared", 1024, text="json", connections=100, window=8, broadcast=True, deflate=NO_CONTEXT),
    Scenario("tls-echo-64t", 64, text="ascii", connections=50, window=10, tls=True),
    Scenario("tls-echo-64k", 64 * 1024, connections=4, window=4, tls=True),
]

# Where a TLS run keeps its certificate: the server makes it, the load trusts it.
TLS_CERT_ENV = "BENCH_TLS_CERT"


def tls_server_context():
    """The server's context for a TLS scenario: a self-signed certificate,
    written to $BENCH_TLS_CERT for the load client to trust."""
    from wsserver.tls import self_signed_context

    return self_signed_context([HOST], certfile=os.environ[TLS_CERT_ENV])


def tls_client_socket(sock: socket.socket):
    """``sock`` with TLS on it, trusting the run's certificate (blocking handshake)."""
    import ssl

    context = ssl.create_default_context(cafile=os.environ[TLS_CERT_ENV])
    return context.wrap_socket(sock, server_hostname=HOST)

# The scenarios of the CPU-ratio table (wsserver against websockets with its
# C speedups, the default install), with the ratio each must reach.
RATIO_TARGETS = {"echo-64t": 0.40, "connect": 0.35, "publish-200": 0.45, "text-1m": 1.2, "echo-1m": None}
RATIO_REFERENCE = "websockets-asyncio"

# --------------------------------------------------------------------------
# frames (the load client's own minimal codec, independent of wsserver)


def frame_header(opcode: int, length: int, mask: bytes | None, rsv1: bool = False) -> bytes:
    bit = 0x80 if mask is not None else 0
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    if length < 126:
        head = bytes((b0, bit | length))
    elif length < 1 << 16:
        head = bytes((b0, bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, bit | 127)) + length.to_bytes(8, "big")
    return head + (mask or b"")


def masked_frame(opcode: int, payload: bytes, mask: bytes, rsv1: bool = False) -> bytes:
    n = len(payload)
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    body = (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")
    return frame_header(opcode, n, mask, rsv1) + body


def deflated(payload: bytes) -> bytes:
    """``payload`` compressed as one permessage-deflate message with no context."""
    import zlib

    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def whole_message(data: bytes | bytearray) -> tuple[int, bytes] | None:
    """If ``data`` starts with a whole server message: its length on the wire
    and its payload (inflated when RSV1 says so); else None."""
    import zlib

    pos, payload, compressed = 0, b"", None
    while True:
        if len(data) < pos + 2:
            return None
        b0, n = data[pos], data[pos + 1] & 0x7F
        head = 2
        if n == 126:
            head, n = 4, int.from_bytes(data[pos + 2 : pos + 4], "big")
        elif n == 127:
            head, n = 10, int.from_bytes(data[pos + 2 : pos + 10], "big")
        if len(data) < pos + head + n:
            return None
        if compressed is None:
            compressed = bool(b0 & 0x40)
        payload += bytes(data[pos + head : pos + head + n])
        pos += head + n
        if b0 & 0x80:
            if compressed:
                payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            return pos, payload


def make_payload(scenario: Scenario) -> bytes:
    if scenario.text == "json":
        rows = ",".join(f'{{"id":{i},"name":"item {i}","price":{i * 37 % 1000 / 10},"on":{str(i % 3 == 0).lower()}}}' for i in range(scenario.size // 40 + 1))
        return ("[" + rows)[: scenario.size].encode()
    if scenario.text == "ascii":
        unit = b"wsserver ascii text 0123456789 "
        return (unit * (scenario.size // len(unit) + 1))[: scenario.size]
    if scenario.text == "mixed":
        # Mixed 1- to 4-byte UTF-8, cut at a character boundary.
        unit = "wsserver ünïcødé ✓ 測試 😀 ".encode()
        data = unit * (scenario.size // len(unit) + 1)
        return data[: scenario.size].decode("utf-8", "ignore").encode()
    return bytes(range(256)) * (scenario.size // 256) + bytes(scenario.size % 256)


def handshake_request(port: int, path: str = "/", extensions: str | None = None) -> tuple[bytes, bytes]:
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()
    return request, accept


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())


# --------------------------------------------------------------------------
# the load client


class MessageCounter:
    """Counts the whole data messages in a server's byte stream by their frame
    headers alone (FIN data frames; control frames are skipped)."""

    __slots__ = ("skip", "final", "head")

    def __init__(self) -> None:
        self.skip = 0  # payload bytes of the current frame still to come
        self.final = False  # the current frame ends a message
        self.head = b""  # the start of a header cut by a read

    def feed(self, data: bytes) -> int:
        count, pos, n = 0, 0, len(data)
        while pos < n:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                if not self.skip and self.final:
                    count += 1
                continue
            head = self.head + data[pos : pos + 10]
            size = 2 if len(head) < 2 or head[1] & 0x7F < 126 else 4 if head[1] & 0x7F == 126 else 10
            if len(head) < size:
                self.head, pos = head, n
                continue
            pos += size - len(self.head)
            self.head = b""
            length = head[1] & 0x7F
            if size > 2:
                length = int.from_bytes(head[2:size], "big")
            self.final = bool(head[0] & 0x80) and head[0] & 0x0F < 8
            self.skip = length
            if not length and self.final:
                count += 1
        return count


class LoadConnection:
    __slots__ = ("sock", "owed", "view", "received", "done", "in_flight", "first", "checked", "writing", "counter")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.owed = 0  # frames to send, not yet started
        self.view: memoryview | None = None  # the frame(s) being sent
        self.received = 0  # bytes of answers received
        self.done = 0  # whole answers received
        self.in_flight = 0
        self.first = bytearray()  # the first answer, checked byte for byte
        self.checked = False
        self.writing = False  # registered for EVENT_WRITE
        self.counter = MessageCounter()  # with deflate, where answers differ in size


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


CLOSE_ANSWER = frame_header(8, 2, None) + (1000).to_bytes(2, "big")


def run_connect_load(port: int, server_pid: int, scenario: Scenario, duration: float, warmup: float) -> dict:
    """Connections, ``scenario.connections`` at a time: each connects, sends
    the upgrade request, reads the 101, sends a Close frame (1000), reads the
    server's Close frame and waits for the server to end the TCP connection
    (so the server, which closes first, keeps the TIME_WAIT)."""
    close_frame = masked_frame(8, (1000).to_bytes(2, "big"), os.urandom(4))
    selector = selectors.DefaultSelector()
    done = 0

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect_ex((HOST, port))
        request, accept = handshake_request(port)
        # [state, bytes received, request, expected accept]; state 0: connecting,
        # 1: waiting for the 101, 2: waiting for the Close frame, 3: waiting for EOF.
        selector.register(sock, selectors.EVENT_WRITE, [0, b"", request, accept])

    for _ in range(scenario.connections):
        open_one()
    start = time.perf_counter()
    t0, t1 = start + warmup, start + warmup + duration
    measuring, sending = False, True
    done0 = done1 = 0
    cpu0 = cpu1 = srv0 = srv1 = 0.0
    while True:
        now = time.perf_counter()
        if not measuring and now >= t0:
            measuring, done0, t0 = True, done, now
            cpu0, srv0 = time.process_time(), _cpu_seconds(server_pid)
        if sending and now >= t1:
            sending, done1, t1 = False, done, now
            cpu1, srv1 = time.process_time(), _cpu_seconds(server_pid)
        if not sending and not selector.get_map():
            break
        if now > t1 + 60:
            raise RuntimeError("connections still open at the deadline")
        for key, _events in selector.select(0.5):
            sock, state = key.fileobj, key.data
            if state[0] == 0:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError(f"connect failed: {os.strerror(err)}")
                sock.send(state[2])
                state[0] = 1
                selector.modify(sock, selectors.EVENT_READ, state)
                continue
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if state[0] < 3 and not chunk:
                raise RuntimeError("server closed the connection early")
            state[1] += chunk
            if state[0] == 1 and b"\r\n\r\n" in state[1]:
                head, _, rest = state[1].partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 101") or state[3] not in head:
                    raise RuntimeError(f"bad handshake answer: {head[:200]!r}")
                state[0], state[1] = 2, rest
                sock.send(close_frame)
            if state[0] == 2 and len(state[1]) >= len(CLOSE_ANSWER):
                if state[1][: len(CLOSE_ANSWER)] != CLOSE_ANSWER:
                    raise RuntimeError(f"unexpected Close answer {state[1][:16]!r}")
                state[0] = 3
            if state[0] == 3 and not chunk:
                selector.unregister(sock)
                sock.close()
                done += 1
                if sending:
                    open_one()
    seconds = t1 - t0
    return {
        "messages": done1 - done0,
        "seconds": seconds,
        "msgs_per_s": (done1 - done0) / seconds,
        "mb_per_s": 0.0,
        "client_cpu": (cpu1 - cpu0) / seconds,
        "server_cpu": (srv1 - srv0) / seconds,
    }


def run_load(port: int, server_pid: int, scenario: Scenario, duration: float, warmup: float) -> dict:
    if scenario.connect:
        return run_connect_load(port, server_pid, scenario, duration, warmup)
    payload = make_payload(scenario)
    opcode = 1 if scenario.text else 2
    mask = os.urandom(4)
    if scenario.deflate:
        # Answers differ in size: the first is inflated and checked, the
        # others counted by their headers.
        frame = masked_frame(opcode, deflated(payload), mask, rsv1=True)
        answer = b""
    else:
        frame = masked_frame(opcode, payload, mask)
        answer = frame_header(opcode, len(payload), None) + payload
    # Small frames are sent in batches cut from one precomputed run of frames.
    batch_frames = max(1, min(64, 65536 // len(frame)))
    batch = frame * batch_frames

    conns = []
    for _ in range(scenario.connections):
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scenario.tls:
            sock = tls_client_socket(sock)
        request, accept = handshake_request(port, extensions=scenario.deflate)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("server closed during the handshake")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise RuntimeError(f"bad handshake answer: {head[:200]!r}")
        if scenario.deflate and b"permessage-deflate" not in head:
            raise RuntimeError("the server declined permessage-deflate")
        sock.setblocking(False)
        conn = LoadConnection(sock)
        conn.first += rest
        conn.received = len(rest)
        conns.append(conn)

    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    senders = conns[:1] if scenario.broadcast else conns
    for conn in senders:
        conn.owed = conn.in_flight = scenario.window
    total_sent = scenario.window * len(senders)
    buf = bytearray(1024 * 1024)
    frame_len = len(answer)

    def want_write(conn: LoadConnection, on: bool) -> None:
        if conn.writing != on:
            conn.writing = on
            selector.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0), conn)

    for conn in senders:
        want_write(conn, True)

    def account(conn: LoadConnection, complete: int) -> int:
        """Count ``complete`` more answers on ``conn``; send as many new
        messages; return how many."""
        conn.done += complete
        if scenario.broadcast and conn not in senders:
            return 0
        conn.in_flight -= complete
        if not sending:
            return 0
        conn.owed += complete
        conn.in_flight += complete
        want_write(conn, True)
        return complete

    sending = True
    start = time.perf_counter()
    cpu_start, srv_start = time.process_time(), _cpu_seconds(server_pid)
    t0 = start + warmup
    t1 = t0 + duration
    measuring = False
    done_at_t0 = done_at_t1 = 0
    cpu0 = cpu1 = srv0 = srv1 = 0.0
    hard_deadline = t1 + 60.0
    while True:
        now = time.perf_counter()
        if not measuring and now >= t0:
            measuring = True
            done_at_t0 = sum(c.done for c in conns)
            cpu0, srv0 = time.process_time(), _cpu_seconds(server_pid)
            t0 = now
        if sending and now >= t1:
            sending = False
            done_at_t1 = sum(c.done for c in conns)
            cpu1, srv1 = time.process_time(), _cpu_seconds(server_pid)
            t1 = now
        if not sending:
            expected = total_sent if scenario.broadcast else None
            if all((c.done >= expected) if expected is not None else c.in_flight == 0 for c in conns):
                break
            if now > hard_deadline:
                raise RuntimeError("answers missing at the deadline")
        for key, events in selector.select(0.5):
            conn = key.data
            if events & selectors.EVENT_READ:
                try:
                    n = conn.sock.recv_into(buf)
                except _AGAIN:
                    n = -1
                if n == 0:
                    raise RuntimeError("server closed the connection")
                if n > 0:
                    conn.received += n
                    if scenario.deflate:
                        if not conn.checked:
                            conn.first += buf[:n]
                            first = whole_message(conn.first)
                            if first is not None:
                                if first[1] != payload:
                                    raise RuntimeError("the server's inflated answer differs from what was sent")
                                conn.checked, conn.first = True, bytearray()
                        complete = conn.counter.feed(bytes(buf[:n]))
                    else:
                        if not conn.checked:
                            conn.first += buf[: min(n, frame_len - len(conn.first))]
                            if len(conn.first) >= frame_len:
                                if bytes(conn.first[:frame_len]) != answer:
                                    raise RuntimeError("the server's answer differs from what was sent")
                                conn.checked, conn.first = True, bytearray()
                        complete = conn.received // frame_len - conn.done
                    if complete:
                        total_sent += account(conn, complete)
            if events & selectors.EVENT_WRITE:
                while True:
                    if conn.view is None:
                        if not conn.owed:
                            want_write(conn, False)
                            break
                        k = min(conn.owed, batch_frames)
                        conn.owed -= k
                        conn.view = memoryview(batch)[: k * len(frame)]
                    try:
                        sent = conn.sock.send(conn.view)
                    except _AGAIN:
                        break
                    conn.view = conn.view[sent:] if sent < len(conn.view) else None
                    if conn.view is not None:
                        break
    end = time.perf_counter()
    for conn in conns:
        conn.sock.close()
    if scenario.broadcast:
        # Every client gets every message: count deliveries over the whole run.
        messages, seconds = total_sent * len(conns), end - start
        cpu0, srv0, cpu1, srv1 = cpu_start, srv_start, time.process_time(), _cpu_seconds(server_pid)
    else:
        messages, seconds = done_at_t1 - done_at_t0, t1 - t0
    return {
        "messages": messages,
        "seconds": seconds,
        "msgs_per_s": messages / seconds,
        "mb_per_s": messages * len(payload) / seconds / 1e6,
        "client_cpu": (cpu1 - cpu0) / seconds,
        "server_cpu": (srv1 - srv0) / seconds,
    }


# --------------------------------------------------------------------------
# the servers (each runs in its own process: ``throughput.py serve NAME``)


def serve_wsserver(port_out, broadcast: bool, pump: str, tls: bool = False) -> None:
    import wsserver

    server = wsserver.Server(
        max_message_size=BIG_LIMIT,
        write_limit=BIG_LIMIT,
        heartbeat_interval=None,
        ssl_context=tls_server_context() if tls else None,
    )
    if broadcast:
        server.on_message = lambda client, message: server.publish(message.data)
    else:
        server.on_message = lambda client, message: client.send(message.data)
    server.start(HOST, 0)
    port_out(server.get_local_ip()[1])
    if pump == "forever":
        server.serve_forever()
    else:
        while True:
            server.poll(0.05)


def serve_websockets_asyncio(port_out, broadcast: bool, deflate: bool = False, tls: bool = False) -> None:
    import asyncio

    import websockets
    from websockets.asyncio.server import serve

    clients = set()

    async def handler(ws):
        clients.add(ws)
        try:
            async for message in ws:
                if broadcast:
                    websockets.broadcast(clients, message)
                else:
                    await ws.send(message)
        finally:
            clients.discard(ws)

    async def main():
        compression = "deflate" if deflate else None
        ssl_context = tls_server_context() if tls else None
        async with serve(handler, HOST, 0, max_size=BIG_LIMIT, compression=compression, ping_interval=None, ssl=ssl_context) as server:
            port_out(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def serve_websockets_sync(port_out, broadcast: bool) -> None:
    import threading

    from websockets.sync.server import serve

    clients = set()
    lock = threading.Lock()

    def handler(ws):
        with lock:
            clients.add(ws)
        try:
            for message in ws:
                if broadcast:
                    with lock:
                        targets = list(clients)
                    for other in targets:
                        try:
                            other.send(message)
                        except Exception:
                            pass
                else:
                    ws.send(message)
        finally:
            with lock:
                clients.discard(ws)

    with serve(handler, HOST, 0, max_size=BIG_LIMIT, compression=None) as server:
        port_out(server.socket.getsockname()[1])
        server.serve_forever()


def serve_tornado(port_out, broadcast: bool) -> None:
    import asyncio

    import tornado.web
    import tornado.websocket

    clients = set()

    class Echo(tornado.websocket.WebSocketHandler):
        def open(self):
            clients.add(self)

        def on_close(self):
            clients.discard(self)

        def on_message(self, message):
            binary = isinstance(message, bytes)
            for target in (list(clients) if broadcast else [self]):
                target.write_message(message, binary=binary)

    async def main():
        app = tornado.web.Application([("/", Echo)], websocket_max_message_size=BIG_LIMIT)
        server = app.listen(0, HOST)
        port_out(next(iter(server._sockets.values())).getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


def serve_aiohttp(port_out, broadcast: bool) -> None:
    import asyncio

    from aiohttp import WSMsgType, web

    clients = set()

    async def handler(request):
        ws = web.WebSocketResponse(max_msg_size=BIG_LIMIT, compress=False, autoping=True)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                for target in (list(clients) if broadcast else [ws]):
                    if msg.type == WSMsgType.TEXT:
                        await target.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await target.send_bytes(msg.data)
        finally:
            clients.discard(ws)
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port_out(site._server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


def serve_wsproto(port_out, broadcast: bool) -> None:
    """The h11-style baseline: wsproto's sans-I/O connection on a selectors loop."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Request, TextMessage

    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    port_out(listener.getsockname()[1])
    peers: dict[socket.socket, dict] = {}

    def write(sock, data: bytes) -> None:
        peer = peers.get(sock)
        if peer is None or not data:
            return
        if not peer["out"]:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            data = data[sent:]
            if not data:
                return
            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, sock)
        peer["out"].append(data)

    def drop(sock) -> None:
        peers.pop(sock, None)
        selector.unregister(sock)
        sock.close()

    buf = bytearray(256 * 1024)
    while True:
        for key, events in selector.select():
            if key.data is None:
                sock, _ = listener.accept()
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peers[sock] = {"ws": WSConnection(ConnectionType.SERVER), "out": [], "parts": []}
                selector.register(sock, selectors.EVENT_READ, sock)
                continue
            sock = key.data
            peer = peers[sock]
            if events & selectors.EVENT_WRITE:
                data = b"".join(peer["out"])
                peer["out"].clear()
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    peer["out"].append(data[sent:])
                else:
                    selector.modify(sock, selectors.EVENT_READ, sock)
            if events & selectors.EVENT_READ:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    drop(sock)
                    continue
                ws = peer["ws"]
                ws.receive_data(bytes(buf[:n]))
                for event in ws.events():
                    if isinstance(event, Request):
                        write(sock, ws.send(AcceptConnection()))
                    elif isinstance(event, Message):
                        peer["parts"].append(event.data)
                        if event.message_finished:
                            parts, peer["parts"] = peer["parts"], []
                            data = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                            kind = TextMessage if isinstance(event, TextMessage) else BytesMessage
                            for target in (list(peers) if broadcast else [sock]):
                                target_ws = peers[target]["ws"]
                                write(target, target_ws.send(kind(data=data)))
                    elif isinstance(event, (Ping, CloseConnection)):
                        write(sock, ws.send(event.response()))


def serve_null(port_out, broadcast: bool, in_len: int, out_frame: bytes, close_after: bool = False) -> None:
    """No WebSocket work: count incoming bytes, answer each whole frame with a
    precomputed one (and end the connection then, with ``close_after``). The
    load client's ceiling on this machine."""
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    port_out(listener.getsockname()[1])
    peers: dict[socket.socket, list] = {}  # sock -> [received, frames done, head bytes, out queue]
    buf = bytearray(1024 * 1024)
    frame_view = memoryview(out_frame)
    batches = {}

    def queue(sock, frames: int) -> None:
        peer = peers[sock]
        if not peer[3]:
            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, sock)
        if len(out_frame) >= 65536:
            peer[3].extend([frame_view] * frames)
        else:
            if frames not in batches:
                batches[frames] = memoryview(out_frame * frames)
            peer[3].append(batches[frames])

    while True:
        for key, events in selector.select():
            if key.data is None:
                sock, _ = listener.accept()
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peers[sock] = [0, 0, b"", []]
                selector.register(sock, selectors.EVENT_READ, sock)
                continue
            sock = key.data
            peer = peers[sock]
            if events & selectors.EVENT_WRITE:
                out = peer[3]
                while out:
                    try:
                        sent = sock.send(out[0])
                    except BlockingIOError:
                        break
                    if sent < len(out[0]):
                        out[0] = out[0][sent:]
                        break
                    out.pop(0)
                if not out:
                    if close_after:
                        peers.pop(sock)
                        selector.unregister(sock)
                        sock.close()
                        continue
                    selector.modify(sock, selectors.EVENT_READ, sock)
            if events & selectors.EVENT_READ:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    peers.pop(sock)
                    selector.unregister(sock)
                    sock.close()
                    continue
                if isinstance(peer[2], bytes):  # still in the handshake
                    head = peer[2] + bytes(buf[:n])
                    if b"\r\n\r\n" not in head:
                        peer[2] = head
                        continue
                    head, _, rest = head.partition(b"\r\n\r\n")
                    key_line = [line for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")]
                    accept = accept_for(key_line[0].split(b":", 1)[1].strip())
                    sock.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                    peer[2] = None
                    n = len(rest)
                peer[0] += n
                frames = peer[0] // in_len - peer[1]
                if frames:
                    peer[1] += frames
                    for target in (list(peers) if broadcast else [sock]):
                        queue(target, frames)


SERVERS = {
    "wsserver": ("wsserver", lambda out, b, s: serve_wsserver(out, b, "forever", s.tls)),
    "wsserver-poll": ("wsserver", lambda out, b, _: serve_wsserver(out, b, "poll")),
    # wsserver without its optional accelerator (numpy), as installed without the speedups extra.
    "wsserver-pure": ("wsserver", lambda out, b, s: serve_wsserver(out, b, "forever", s.tls)),
    # wsserver from another checkout (--base DIR), to measure a change.
    "wsserver-base": ("wsserver", lambda out, b, _: serve_wsserver(out, b, "forever")),
    "websockets-asyncio": ("websockets", lambda out, b, s: serve_websockets_asyncio(out, b, bool(s.deflate), s.tls)),
    "websockets-asyncio-pure": ("websockets", lambda out, b, s: serve_websockets_asyncio(out, b, bool(s.deflate), s.tls)),
    "websockets-sync": ("websockets", lambda out, b, _: serve_websockets_sync(out, b)),
    "websockets-sync-pure": ("websockets", lambda out, b, _: serve_websockets_sync(out, b)),
    "wsproto": ("wsproto", lambda out, b, _: serve_wsproto(out, b)),
    "tornado": ("tornado", lambda out, b, _: serve_tornado(out, b)),
    "tornado-pure": ("tornado", lambda out, b, _: serve_tornado(out, b)),
    "aiohttp": ("aiohttp", lambda out, b, _: serve_aiohttp(out, b)),
    "aiohttp-pure": ("aiohttp", lambda out, b, _: serve_aiohttp(out, b)),
    "null": (None, lambda out, b, s: serve_null(out, b, *_null_frames(s))),
}


# Servers with no C accelerator at all (besides the "-pure" runs of the others).
PURE_PYTHON = {"wsproto"}


def _null_frames(scenario: Scenario) -> tuple[int, bytes, bool]:
    if scenario.connect:
        return 8, CLOSE_ANSWER, True  # a masked Close frame with a code in, the Close answer out
    payload = make_payload(scenario)
    opcode = 1 if scenario.text else 2
    in_len = len(frame_header(opcode, len(payload), b"\0" * 4)) + len(payload)
    return in_len, frame_header(opcode, len(payload), None) + payload, False


def _server_environment(name: str, base: str | None) -> dict:
    """The environment of a server process: ``-pure`` servers lose their C
    accelerators, ``wsserver-base`` imports wsserver from ``base``."""
    env = dict(os.environ)
    if name == "wsserver-base":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(base or "."), env.get("PYTHONPATH")]))
    if name.endswith("-pure"):
        env.update(AIOHTTP_NO_EXTENSIONS="1", TORNADO_EXTENSION="0", BENCH_NO_SPEEDUPS="1", WSSERVER_SPEEDUPS="0")
    return env


def serve_main(name: str, scenario: Scenario) -> None:
    if os.environ.get("BENCH_NO_SPEEDUPS"):
        sys.modules["websockets.speedups"] = None  # type: ignore[assignment]  # forces the Python fallback

    def port_out(port: int) -> None:
        print(f"PORT {port}", flush=True)

    SERVERS[name][1](port_out, scenario.broadcast, scenario)


# --------------------------------------------------------------------------
# the orchestrator


def _available(name: str) -> bool:
    module = SERVERS[name][0]
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def run_one(name: str, scenario: Scenario, duration: float, warmup: float, verbose: bool = False, base: str | None = None) -> dict:
    here = os.path.abspath(__file__)
    folder = tempfile.TemporaryDirectory()
    cert = {TLS_CERT_ENV: os.path.join(folder.name, "cert.pem")}
    server = subprocess.Popen(
        [sys.executable, here, "serve", name, scenario.name],
        stdout=subprocess.PIPE,
        stderr=None if verbose else subprocess.DEVNULL,
        text=True,
        env={**_server_environment(name, base), **cert},
    )
    try:
        if not select.select([server.stdout], [], [], 30)[0]:
            raise RuntimeError(f"{name} did not start within 30 s")
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{name} did not start")
        port = int(line.split()[1])
        load = subprocess.run(
            [sys.executable, here, "load", str(port), str(server.pid), scenario.name, str(duration), str(warmup)],
            capture_output=True,
            text=True,
            timeout=duration + warmup + 120,
            env={**os.environ, **cert},
        )
        if load.returncode != 0:
            raise RuntimeError(load.stderr.strip().splitlines()[-1] if load.stderr.strip() else "load failed")
        return json.loads(load.stdout)
    finally:
        server.kill()
        server.wait()
        folder.cleanup()


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def render(results: dict, servers: list[str], scenarios: list[Scenario], markdown: bool) -> str:
    rows = []
    header = ["scenario", "server", "msgs/s", "MB/s", "server CPU", "server µs/msg", "client CPU"]
    for scenario in scenarios:
        for name in servers:
            r = results.get((scenario.name, name))
            if r is None:
                continue
            if "error" in r:
                rows.append([scenario.name, name, "error", r["error"][:40], "", "", ""])
                continue
            rows.append([
                scenario.name,
                name,
                fmt_rate(r["msgs_per_s"]),
                f"{r['mb_per_s']:,.1f}",
                f"{r['server_cpu']:.0%}",
                f"{r['server_cpu'] / r['msgs_per_s'] * 1e6:,.1f}",
                f"{r['client_cpu']:.0%}",
            ])
    ratios = []
    ratio_header = ["scenario", "wsserver", "best other (as installed)", "ratio", "best other pure-Python", "ratio"]
    for scenario in scenarios:
        ours = results.get((scenario.name, "wsserver"))
        if not ours or "error" in ours:
            continue
        others = {n: r for (s, n), r in results.items() if s == scenario.name and not n.startswith("wsserver") and n != "null" and "error" not in r}
        if not others:
            continue
        best = max(others, key=lambda n: others[n]["msgs_per_s"])
        pure = {n: r for n, r in others.items() if n in PURE_PYTHON or n.endswith("-pure")}
        best_pure = max(pure, key=lambda n: pure[n]["msgs_per_s"]) if pure else None
        row = [scenario.name, fmt_rate(ours["msgs_per_s"]), f"{best} {fmt_rate(others[best]['msgs_per_s'])}", f"{ours['msgs_per_s'] / others[best]['msgs_per_s']:.2f}"]
        if best_pure:
            row += [f"{best_pure} {fmt_rate(pure[best_pure]['msgs_per_s'])}", f"{ours['msgs_per_s'] / pure[best_pure]['msgs_per_s']:.2f}"]
        else:
            row += ["", ""]
        base = results.get((scenario.name, "wsserver-base"))
        if base is not None and "error" not in base:
            row += [fmt_rate(base["msgs_per_s"]), f"{ours['msgs_per_s'] / base['msgs_per_s']:.2f}"]
        ratios.append(row)
    if any(len(row) > len(ratio_header) for row in ratios):
        ratio_header += ["wsserver-base", "ratio"]
        ratios = [row + [""] * (len(ratio_header) - len(row)) for row in ratios]
    tables = [_table(header, rows, markdown), _table(ratio_header, ratios, markdown)]
    cpu_rows = _cpu_ratio_rows(results, scenarios)
    if cpu_rows:
        cpu_header = ["scenario", "unit", "wsserver CPU µs/unit", f"{RATIO_REFERENCE} µs/unit", "ratio", "target", "wsserver-pure µs/unit", "ratio"]
        tables.append(_table(cpu_header, cpu_rows, markdown))
    return "\n\n".join(tables)


def median_run(rounds: list[dict]) -> dict:
    """The median of a server's rounds, figure by figure (an error if none succeeded)."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[0]
    return {key: statistics.median(r[key] for r in good) for key in good[0]}


def cpu_per_unit(result: dict) -> float:
    """Server CPU seconds per unit of work (message, delivery or connection)."""
    return result["server_cpu"] / result["msgs_per_s"]


def _cpu_ratio_rows(results: dict, scenarios: list[Scenario]) -> list[list[str]]:
    """wsserver's server CPU per unit of work ÷ the reference server's."""
    rows = []
    for scenario in scenarios:
        ours, theirs = results.get((scenario.name, "wsserver")), results.get((scenario.name, RATIO_REFERENCE))
        if not ours or not theirs or "error" in ours or "error" in theirs:
            continue
        ratio = cpu_per_unit(ours) / cpu_per_unit(theirs)
        target = RATIO_TARGETS.get(scenario.name)
        verdict = "" if target is None else f"≤ {target:.2f} {'met' if ratio <= target else 'not met'}"
        row = [scenario.name, scenario.unit, f"{cpu_per_unit(ours) * 1e6:,.1f}", f"{cpu_per_unit(theirs) * 1e6:,.1f}", f"{ratio:.2f}", verdict]
        pure = results.get((scenario.name, "wsserver-pure"))
        if pure and "error" not in pure:
            row += [f"{cpu_per_unit(pure) * 1e6:,.1f}", f"{cpu_per_unit(pure) / cpu_per_unit(theirs):.2f}"]
        else:
            row += ["", ""]
        rows.append(row)
    return rows


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*row) for row in rows])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2], _scenario(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        port, pid, name, duration, warmup = sys.argv[2:7]
        print(json.dumps(run_load(int(port), int(pid), _scenario(name), float(duration), float(warmup))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--scenarios", help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every server; the tables show medians (default 1)")
    parser.add_argument("--quick", action="store_true", help="1 s runs, 0.3 s warm-up")
    parser.add_argument("--base", metavar="DIR", help="also run wsserver from the checkout in DIR, as 'wsserver-base'")
    parser.add_argument("--verbose", action="store_true", help="show the servers' own logs")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown to FILE")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 1.0, 0.3
    servers = args.servers.split(",") if args.servers else [s for s in SERVERS if s != "wsserver-base"]
    if args.base and "wsserver-base" not in servers:
        servers.insert(1, "wsserver-base")
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers: {unknown}")
    skipped = [s for s in servers if not _available(s)]
    servers = [s for s in servers if s not in skipped]
    scenarios = [_scenario(s) for s in args.scenarios.split(",")] if args.scenarios else SCENARIOS
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; skipped (not installed): {', '.join(skipped) or 'none'}", file=sys.stderr)
    runs: dict = {}
    # Rounds go over every server in turn, so that other work on the machine
    # slows them alike; the tables show each server's median round.
    for _round in range(args.repeat):
        for scenario in scenarios:
            for name in servers:
                try:
                    r = run_one(name, scenario, args.duration, args.warmup, args.verbose, args.base)
                except Exception as exc:  # a server that fails a scenario gets an error row
                    r = {"error": str(exc)}
                    print(f"{scenario.name:12} {name:24} error: {exc}", file=sys.stderr)
                else:
                    print(
                        f"{scenario.name:12} {name:24} {fmt_rate(r['msgs_per_s']):>10} {scenario.unit}s/s {r['mb_per_s']:8.1f} MB/s"
                        f" {cpu_per_unit(r) * 1e6:10.1f} server µs/{scenario.unit}",
                        file=sys.stderr,
                    )
                runs.setdefault((scenario.name, name), []).append(r)
    results = {key: median_run(rounds) for key, rounds in runs.items()}
    print()
    print(render(results, servers, scenarios, markdown=False))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render(results, servers, scenarios, markdown=True) + "\n")


def _scenario(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(s.name for s in SCENARIOS)}")


if __name__ == "__main__":
    main()
