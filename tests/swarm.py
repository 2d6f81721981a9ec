"""Many clients on one thread, for tests that need hundreds or thousands of
connections without a thread each.

:class:`Swarm` drives WebSocket clients built on the ``websockets`` library's
sans-I/O :class:`~websockets.client.ClientProtocol` (a real client that
nobody here wrote) over non-blocking sockets served by one selector.
:class:`RawSockets` holds bare TCP sockets for clients that must misbehave.
:class:`HealthyClient` is a ``websockets`` threaded client that echoes
without pause, to show that other clients keep working during a fault.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.sync.client import connect
from websockets.uri import parse_uri


def raise_open_file_limit(needed: int) -> None:
    """Make sure this process may hold ``needed`` descriptors (client and
    server ends of every connection, plus slack), or skip the test."""
    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-file hard limit {hard} is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class SwarmClient:
    """One client of a :class:`Swarm`; read its fields from any thread."""

    def __init__(self, swarm: Swarm, index: int, path: str | None = None) -> None:
        self.swarm = swarm
        self.index = index
        # Unless told otherwise, each client asks for its own path,
        # /s<index>, so that the server side can tell which client a
        # connection is.
        extensions = [ClientPerMessageDeflateFactory()] if swarm.deflate else None
        self.protocol = ClientProtocol(parse_uri(swarm.url.rstrip("/") + (path or f"/s{index}")), max_size=swarm.max_size, extensions=extensions)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.out = bytearray()
        self.connected = False
        self.opened = False  # the handshake succeeded
        self.status: int | None = None
        self.messages: list[str | bytes] = []
        self.tcp_closed = False

    @property
    def close_code(self) -> int | None:
        """The code of the server's Close frame (1006 if none came)."""
        return self.protocol.close_code if self.tcp_closed else None


class Swarm:
    """A set of ``websockets`` sans-I/O clients served by one selector.

    Call :meth:`step` from the test thread, or :meth:`start` a helper thread
    that steps until :meth:`stop`; then hand it work with :meth:`call`.
    """

    def __init__(self, url: str, max_size: int | None = 2**20, deflate: bool = False) -> None:
        self.url = url
        self.max_size = max_size
        self.deflate = deflate  # offer permessage-deflate (websockets' default offer)
        self.selector = selectors.DefaultSelector()
        self.clients: list[SwarmClient] = []
        self.on_message: Callable[[SwarmClient, str | bytes], Any] | None = None
        self._calls: list[tuple[Callable[..., Any], tuple]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.error: BaseException | None = None

    # -- commands (on the swarm's thread) ---------------------------------

    def open(self, count: int, host: str, port: int, paths: Sequence[str] | None = None) -> list[SwarmClient]:
        """Start ``count`` connections (to ``paths``, one each, when given);
        their handshakes run as the swarm steps."""
        assert paths is None or len(paths) == count
        new = []
        for n in range(count):
            client = SwarmClient(self, len(self.clients), None if paths is None else paths[n])
            err = client.sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, "connect failed")
            self.clients.append(client)
            self.selector.register(client.sock, selectors.EVENT_WRITE, client)
            new.append(client)
        return new

    def send_text(self, client: SwarmClient, text: str) -> None:
        client.protocol.send_text(text.encode())
        self._flush(client)

    def close(self, client: SwarmClient, code: int = 1000) -> None:
        """Start the closing handshake from the client's side."""
        if client.protocol.state is State.OPEN:
            client.protocol.send_close(code)
            self._flush(client)

    # -- the loop ----------------------------------------------------------

    def step(self, timeout: float = 0.0) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            fn(*args)
        if not self.selector.get_map():
            return
        for key, mask in self.selector.select(timeout):
            client: SwarmClient = key.data
            if not client.connected:
                self._connected(client)
                continue
            if mask & selectors.EVENT_WRITE:
                self._send(client)
            if mask & selectors.EVENT_READ and not client.tcp_closed:
                self._read(client)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the swarm's thread at its next step."""
        with self._lock:
            self._calls.append((fn, args))

    def start(self) -> None:
        def loop() -> None:
            try:
                while not self._stopping.is_set():
                    self.step(0.005)
            except BaseException as exc:  # handed to the test by stop()
                self.error = exc

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the helper thread, then close every socket; raises what the thread raised."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(10)
            self._thread = None
        for client in self.clients:
            client.sock.close()
        self.selector.close()
        if self.error is not None:
            raise self.error

    # -- internals ---------------------------------------------------------

    def _connected(self, client: SwarmClient) -> None:
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._lost(client)
            return
        client.connected = True
        client.protocol.send_request(client.protocol.connect())
        self.selector.modify(client.sock, selectors.EVENT_READ, client)
        self._flush(client)

    def _flush(self, client: SwarmClient) -> None:
        for data in client.protocol.data_to_send():
            if data:
                client.out += data
            # b"" asks for a half-close; the server closes TCP first, so wait for it.
        self._send(client)

    def _send(self, client: SwarmClient) -> None:
        if client.tcp_closed or not client.connected:
            return
        if client.out:
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost(client)
                return
            del client.out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        self.selector.modify(client.sock, events, client)

    def _read(self, client: SwarmClient) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            client.protocol.receive_data(data)
        else:
            client.protocol.receive_eof()
        for event in client.protocol.events_received():
            if isinstance(event, Response):
                client.status = event.status_code
                client.opened = client.protocol.handshake_exc is None
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY):
                # Messages from this server are never fragmented by it.
                payload = event.data.decode() if event.opcode is Opcode.TEXT else bytes(event.data)
                client.messages.append(payload)
                if self.on_message is not None:
                    self.on_message(client, payload)
        self._flush(client)
        if not data:
            self._lost(client)

    def _lost(self, client: SwarmClient) -> None:
        if client.tcp_closed:
            return
        client.tcp_closed = True
        if client.protocol.state is not State.CLOSED:
            client.protocol.receive_eof()
        self.selector.unregister(client.sock)
        client.sock.close()


class RawSockets:
    """Bare non-blocking TCP connections to the server, polled by the test thread."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.received: dict[socket.socket, bytearray] = {}
        self.eof: set[socket.socket] = set()

    def connect(self, count: int, address: tuple[str, int]) -> list[socket.socket]:
        new = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                raise OSError(err, "connect failed")
            self.socks.append(sock)
            self.received[sock] = bytearray()
            new.append(sock)
        return new

    def read_all(self) -> None:
        """Take whatever each open socket has; note the ones that saw EOF or a reset."""
        for sock in self.socks:
            if sock in self.eof:
                continue
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOTCONN:  # still connecting
                        break
                    data = b""
                if not data:
                    self.eof.add(sock)
                    break
                self.received[sock] += data

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class HealthyClient(threading.Thread):
    """A ``websockets`` client that echoes through the server without pause.

    ``round_trips`` counts the echoes it got back, ``broadcasts`` keeps the
    other messages (those published to everyone); :meth:`finish` closes it
    and raises whatever went wrong (a lost or wrong echo included).
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.round_trips = 0
        self.broadcasts: list[str] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=10, close_timeout=10) as ws:
                self.ready.set()
                while not self._stop_event.is_set():
                    text = f"healthy {self.round_trips}"
                    ws.send(text)
                    echoed = ws.recv(timeout=10)
                    while isinstance(echoed, str) and not echoed.startswith("healthy "):
                        self.broadcasts.append(echoed)  # a publish() meant for everyone
                        echoed = ws.recv(timeout=10)
                    if echoed != text:
                        raise AssertionError(f"healthy client sent {text!r}, got {echoed!r}")
                    self.round_trips += 1
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def finish(self, pump: Callable[[Callable[[], bool]], None]) -> None:
        """Stop echoing and close; ``pump(condition)`` serves the server meanwhile."""
        self._stop_event.set()
        pump(lambda: not self.is_alive())
        if self.error is not None:
            raise self.error


def wait_round_trips(healthy: HealthyClient, pump: Callable[[Callable[[], bool]], None], more: int = 3) -> None:
    """Pump until the healthy client has done ``more`` echoes from now on."""
    target = healthy.round_trips + more
    pump(lambda: healthy.round_trips >= target or healthy.error is not None)
    if healthy.error is not None:
        raise healthy.error


class Harness:
    """A started server whose every callback is recorded, that echoes each
    message, with a :class:`HealthyClient` echoing through it.

    :meth:`finish` checks the invariants every fault test must keep: the
    healthy client never lost an echo, ``on_client_closed`` ran exactly once
    per client ``on_open`` ran for and for no other, ``client_count()`` is
    back to 0, and nothing reached the reactor's last-resort handler (which
    is what an exception escaping the server's own code would do).
    """

    def __init__(self, caplog: Any, healthy: bool = True, **options: Any) -> None:
        from conftest import Recorder
        from wsserver import Server

        self.caplog = caplog
        self.server = Server(**options)
        self.recorder = Recorder(self.server, echo=True)
        self.server.start("127.0.0.1", 0)
        host, self.port = self.server.get_local_ip()
        self.address = (host, self.port)
        self.url = self.server.get_url()
        self.healthy: HealthyClient | None = None
        if healthy:
            self.healthy = HealthyClient(self.url)
            self.healthy.start()
            self.pump(lambda: self.healthy.ready.is_set())
            wait_round_trips(self.healthy, self.pump)

    def pump(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
        from conftest import pump_until

        pump_until(self.server, condition, timeout, what)

    def read_until_closed(self, sock: socket.socket) -> bytes:
        """Pump until the server closed ``sock``'s connection; return what came before."""
        sock.setblocking(False)
        got = bytearray()
        closed = []

        def read() -> bool:
            try:
                while chunk := sock.recv(65536):
                    got.extend(chunk)
                closed.append(True)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed.append(True)
            return bool(closed)

        self.pump(read, what="the server to close the connection")
        return bytes(got)

    def keeps_working(self, more: int = 3) -> None:
        """The healthy client gets ``more`` further echoes back."""
        if self.healthy is not None:
            wait_round_trips(self.healthy, self.pump, more)

    def opened_ids(self) -> set[int]:
        return {c.id for c in self.recorder.opened}

    def finish(self) -> None:
        if self.healthy is not None:
            self.keeps_working()
            self.healthy.finish(self.pump)
        self.pump(self.recorder.all_closed, what="every opened client closed")
        self.recorder.check_invariants()
        assert not self.server.connection_count(), "TCP connections left over"
        escaped = [r for r in self.caplog.records if r.name == "wsserver" and "unhandled error" in r.getMessage()]
        assert not escaped, [r.getMessage() for r in escaped]

    def stop(self) -> None:
        self.server.stop()
