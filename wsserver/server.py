"""The :class:`Server`: aardio's ``web.socket.server`` API for Python.

It wires the reactor (sockets, timers), the HTTP server and the WebSocket
protocol (through one :class:`~wsserver.peer.Peer` per connection) to the
application's callbacks. Every call into application code is guarded: an
exception raised by a callback goes to ``on_error`` (or the ``wsserver``
logger) and never escapes :meth:`Server.poll` into the GUI loop.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from .http.request import Request, RequestParser
from .http.response import render_head
from .http.server import HttpServer
from .peer import Client, Data, Peer, Phase, UpgradeResponse, as_payload, encode_message
from .protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    Fragment,
    Message,
    Opcode,
    ProtocolError,
    encode_frame,
)
from .reactor import Reactor, Stream

__all__ = ["Server", "Client", "UpgradeResponse"]

logger = logging.getLogger("wsserver")

class _TranslateHook:
    """The ``translate_message`` attribute: it may be set once, then never replaced."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, server: Any, owner: type | None = None) -> Any:
        return self if server is None else getattr(server, self.slot, None)

    def __set__(self, server: Any, hook: Callable[[Client, Message], Any] | None) -> None:
        if getattr(server, self.slot, None) is not None:
            raise AttributeError("translate_message is already set and cannot be replaced")
        setattr(server, self.slot, hook)


class Server:
    """A WebSocket + HTTP server driven by :meth:`poll` on the caller's thread.

    Every limit is a keyword option with a safe default:

    :param max_message_size: largest incoming message in bytes (1009 beyond);
        None for no limit.
    :param max_request_line: longest HTTP request line in bytes (414 beyond).
    :param max_header_bytes: most bytes of HTTP header lines (431 beyond).
    :param max_header_count: most HTTP header lines in one request (431 beyond).
    :param max_body_size: largest HTTP request body in bytes (413 beyond).
    :param handshake_timeout: seconds from accept for the first request (and
        from the first byte for later ones) to arrive whole.
    :param keepalive_timeout: seconds an idle HTTP keep-alive connection is kept.
    :param close_timeout: seconds to wait for the peer's Close frame, or for
        the last bytes to drain, before dropping the connection.
    :param max_connections: most TCP connections at once (HTTP and
        WebSocket); beyond it new ones get 503.
    :param write_limit: bytes of unsent output per client beyond which
        :meth:`send` refuses more.
    :param write_grace: seconds a client that reached its ``write_limit``
        has to drain to its low-water mark (where ``on_drain`` runs) before
        it is closed with 1008; None never closes it.
    :param heartbeat_interval: seconds of silence from a client before a
        heartbeat frame is sent to it; None or -1 disables.
    :param heartbeat_timeout: seconds a client may stay silent after a
        heartbeat ping before it is dropped (1011); None disables.
    :param heartbeat_type: 9 (Ping, answered by the client) or 10 (Pong,
        one-way).
    :param heartbeat_data: the heartbeat frames' payload.
    :param origins: if set, the ``Origin`` values allowed to upgrade (403 otherwise).
    :param poll_budget: seconds of work one :meth:`poll` does at most.
    :param root: the document root that ``http_server`` serves files from
        (see :class:`~wsserver.http.server.HttpServer`); None for none.
    """

    translate_message = _TranslateHook()

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_request_line: int = 8 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        max_body_size: int = 16 * 1024 * 1024,
        handshake_timeout: float | None = 10.0,
        keepalive_timeout: float | None = 15.0,
        close_timeout: float = 10.0,
        max_connections: int = 1024,
        write_limit: int = 4 * 1024 * 1024,
        write_grace: float | None = 10.0,
        heartbeat_interval: float | None = 20.0,
        heartbeat_timeout: float | None = 20.0,
        heartbeat_type: int = Opcode.PING,
        heartbeat_data: Data = b"",
        origins: list[str | None] | None = None,
        poll_budget: float = 0.002,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if heartbeat_type not in (Opcode.PING, Opcode.PONG):
            raise ValueError("heartbeat_type is 9 (ping) or 10 (pong)")
        self.max_message_size = max_message_size
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.max_body_size = max_body_size
        self.handshake_timeout = handshake_timeout
        self.keepalive_timeout = keepalive_timeout
        self.close_timeout = close_timeout
        self.max_connections = max_connections
        self.write_limit = write_limit
        self.write_grace = write_grace
        self.heartbeat_interval = None if heartbeat_interval is not None and heartbeat_interval < 0 else heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat_type = heartbeat_type
        self.heartbeat_data = heartbeat_data
        self.origins = origins

        self.on_open: Callable[[Client], Any] | None = None
        self.on_message: Callable[[Client, Message], Any] | None = None
        self.on_fragment: Callable[[Client, Fragment], Any] | None = None
        self.on_close: Callable[[Client, int, str], Any] | None = None
        self.on_client_closed: Callable[[Client], Any] | None = None
        self._on_client_closed: Callable[[Client], Any] | None = None
        self.on_error: Callable[[Client | None, BaseException], Any] | None = None
        self.on_drain: Callable[[Client], Any] | None = None
        self.on_upgrade_to_websocket: Callable[[Client, Request, UpgradeResponse, list[str], str | None], Any] | None = None
        self.before_stop: Callable[[], Any] | None = None
        self._before_stop: Callable[[], Any] | None = None

        self.reactor = Reactor(budget=poll_budget)
        self.http_server = HttpServer(self, root)
        self._listener: Any = None
        self._peers: set[Peer] = set()
        self._clients: dict[int, Client] = {}
        self._client_ids = itertools.count(1)
        self._stopping = False

    # -- life cycle ------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 128) -> None:
        """Listen on ``host``:``port``; port 0 picks a free one. Raises ``OSError``.

        The default host is loopback: ``"0.0.0.0"`` or ``"::"`` exposes the
        server to the network (see ``origins``).
        """
        if self._listener is not None:
            raise RuntimeError("server already started")
        if self.reactor.closed:
            raise RuntimeError("server was shut down")
        self._listener = self.reactor.listen(host, port, self._accept, backlog)

    @property
    def started(self) -> bool:
        return self._listener is not None

    def stop(self, timeout: float = 1.0) -> None:
        """Stop listening and close every connection.

        Runs ``before_stop`` (then the extension hook ``_before_stop``),
        sends every WebSocket client a 1001 Close frame, and waits up to
        ``timeout`` seconds for the frames to be flushed and the closing
        handshakes to finish; connections still open then are dropped.
        ``on_client_closed`` has run for every client when this returns, and
        ``start()`` can listen on the same port again.
        """
        if self._listener is None or self._stopping:
            return
        self._stopping = True
        try:
            self._invoke(self.before_stop, None)
            self._invoke(self._before_stop, None)
            self._listener.close()
            for peer in list(self._peers):
                if peer.phase is Phase.WEBSOCKET:
                    peer.start_close(CloseCode.GOING_AWAY, "server stopping")
                else:
                    peer.stop_http()
            reactor = self.reactor
            deadline = reactor.time() + timeout
            while self._peers and reactor.time() < deadline:
                reactor.poll(min(0.05, max(0.0, deadline - reactor.time())))
            for peer in list(self._peers):
                peer.stream.abort(TimeoutError("server stopped"))
        finally:
            self._listener = None
            self._stopping = False
            self.reactor.stop()

    def shutdown(self) -> None:
        """:meth:`stop`, then release the reactor's own descriptors (the
        selector and its wake-up sockets). The server cannot start again."""
        self.stop()
        self.reactor.close()

    # -- pumping ---------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> bool:
        """Do the ready network work and due timers; see :meth:`Reactor.poll`."""
        return self.reactor.poll(timeout)

    def serve_forever(self) -> None:
        """Poll until :meth:`stop` (for programs without a GUI loop)."""
        self.reactor.serve_forever()

    def fileno(self) -> int | None:
        return self.reactor.fileno()

    def next_deadline(self) -> float | None:
        return self.reactor.next_deadline()

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the polling thread soon. The one method
        that is safe to call from any thread."""
        self.reactor.call_soon_threadsafe(callback, *args)

    # -- sending ---------------------------------------------------------

    def send(self, client: Client | int, data: Data) -> bool:
        """Send ``data`` to one client: ``str`` as text, bytes-like as binary.

        False if the client is not connected or already has ``write_limit``
        bytes waiting (nothing is queued then).
        """
        peer = self._open_peer(client)
        if peer is None:
            return False
        peer.write_frames(*encode_message(data))
        return True

    def publish(self, data: Data) -> bool:
        """Send ``data`` to every connected client; the frame is encoded once.

        True if every client took it; clients over their ``write_limit`` are
        skipped.
        """
        frame = encode_message(data)
        delivered = True
        for client in list(self._clients.values()):
            peer = client._peer
            if not peer.is_open:
                continue
            if peer.backlogged:
                delivered = False
                continue
            peer.write_frames(*frame)
        return delivered

    def send_data(
        self,
        client: Client | int,
        data: Data,
        opcode: int = Opcode.BINARY,
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> bool:
        """Send one raw frame with explicit opcode, FIN and RSV bits."""
        if not 0 <= opcode <= 0xF:
            raise ValueError("opcode is 0 to 15")
        payload = as_payload(data)
        if opcode >= 0x8 and (not fin or len(payload) > 125):
            raise ValueError("control frames are final and carry at most 125 bytes")
        peer = self._open_peer(client)
        if peer is None:
            return False
        peer.write_frames(*encode_frame(opcode, payload, fin, rsv1, rsv2, rsv3))
        return True

    def close(self, client: Client | int, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``; the
        connection ends when the client answers or ``close_timeout`` passes."""
        found = self._resolve(client)
        if found is not None:
            found._peer.start_close(code, reason)

    def _open_peer(self, client: Client | int) -> Peer | None:
        """The connection of a client that may be sent to now, or None."""
        found = self._resolve(client)
        if found is None:
            return None
        peer = found._peer
        if not peer.is_open or peer.backlogged:
            return None
        return peer

    def _resolve(self, client: Client | int) -> Client | None:
        """The :class:`Client` that a client or a client id stands for."""
        return self.client(client) if isinstance(client, int) else client

    # -- queries ---------------------------------------------------------

    def client(self, client_id: int) -> Client | None:
        """The :class:`Client` with that id, while it is connected or connecting."""
        return self._clients.get(client_id)

    def clients(self) -> list[Client]:
        """Every WebSocket client now (connecting and closing ones included)."""
        return list(self._clients.values())

    def client_count(self) -> int:
        """WebSocket clients from their upgrade request until closed."""
        return len(self._clients)

    def is_closed(self, client: Client | int) -> bool:
        found = self._resolve(client)
        return found is None or found.is_closed

    def is_connected(self, client: Client | int) -> bool:
        found = self._resolve(client)
        return found is not None and found.is_connected

    def get_local_ip(self) -> tuple[str, int] | None:
        """The bound (host, port), or None if not started."""
        if self._listener is None:
            return None
        host, port = self._listener.address[:2]
        return host, port

    def get_remote_ip(self, client: Client | int) -> tuple[str, int] | None:
        found = self._resolve(client)
        return None if found is None else (found.remote_address[0], found.remote_address[1])

    def get_url(self, path: str = "", use_lan_ip: bool = False) -> str | None:
        """The ``ws://host:port/path`` URL, or None if not started. A wildcard
        bind shows as ``localhost``, or as the LAN address with ``use_lan_ip``."""
        return self._url("ws", path, use_lan_ip)

    def _url(self, scheme: str, path: str, use_lan_ip: bool) -> str | None:
        local = self.get_local_ip()
        if local is None:
            return None
        host, port = local
        if host in ("0.0.0.0", "::"):
            host = _lan_address(socket.AF_INET6 if host == "::" else socket.AF_INET) if use_lan_ip else "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}/{path.lstrip('/')}"

    # -- internals -------------------------------------------------------

    def _accept(self, sock: socket.socket, address: Any) -> None:
        if len(self._peers) >= self.max_connections or self._stopping:
            refusal = Stream(self.reactor, sock)
            refusal.write(render_head(503, [("Content-Length", "0"), ("Connection", "close"), ("Retry-After", "1")]))
            refusal.close()
            return
        self._peers.add(Peer(self, sock))

    def _request_parser(self) -> RequestParser:
        return RequestParser(
            max_request_line=self.max_request_line,
            max_header_bytes=self.max_header_bytes,
            max_header_count=self.max_header_count,
            max_body_size=self.max_body_size,
        )

    def _invoke(self, callback: Callable[..., Any] | None, client: Client | None, *args: Any) -> Any:
        """Call application code; an exception goes to ``on_error``, never up.

        Returns what the callback returned (None if it is unset or raised).
        """
        if callback is None:
            return None
        try:
            return callback(*args)
        except Exception as exc:
            self._report_error(client, exc)
            return None

    def _report_error(self, client: Client | None, exc: BaseException) -> None:
        handler = self.on_error
        if handler is not None:
            try:
                handler(client, exc)
                return
            except Exception:
                logger.exception("on_error raised while handling %r", exc)
        logger.error("error on %r: %s", client, exc, exc_info=exc if not isinstance(exc, ProtocolError) else None)


def _lan_address(family: int) -> str:
    """This machine's address on its default route; connecting a UDP socket
    sends no packet, it only asks the kernel which interface it would use."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            return udp.getsockname()[0]
    except OSError:
        return "localhost"
