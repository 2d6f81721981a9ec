"""The :class:`Server`: aardio's ``web.socket.server`` API for Python.

It wires the reactor (sockets, timers), the HTTP server and the WebSocket
protocol (through the drivers in :mod:`wsserver.drivers`, one per
connection, which see the server only through a
:class:`~wsserver.context.ServerContext`) to the application's callbacks.
Every call into application code is guarded: an exception raised by a
callback goes to ``on_error`` (or the ``wsserver`` logger) and never escapes
:meth:`Server.poll` into the GUI loop.

**One thread.** Every method but :meth:`Server.call_soon_threadsafe` must be
called on the thread that polls the server; the sending methods, ``close``
and ``stop`` raise ``RuntimeError`` on any other (see
:meth:`Server.call_soon_threadsafe`).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import warnings
from collections.abc import Callable, Collection, Iterable
from threading import get_ident
from typing import Any

from .client import Client, UpgradeResponse
from .context import LifecycleEvent, Outlet, ServerContext
from .drivers import HttpDriver
from .http.request import Request
from .http.response import render_head
from .http.server import HttpServer
from .protocol import (
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    Compression,
    Data,
    Fragment,
    Message,
    Opcode,
    as_bytes,
    check_frame,
    prepare_message,
)
from .reactor import Reactor, Stream, Timer
from .resume import ResumePolicy

__all__ = ["Server", "Client", "UpgradeResponse", "DEFAULT_MAX_CONNECTIONS", "SELECT_MAX_CONNECTIONS"]

logger = logging.getLogger("wsserver")

#: The default of ``max_connections``.
DEFAULT_MAX_CONNECTIONS = 1024
#: ``max_connections`` at most where sockets are watched with select()
#: (Windows): of the 511 sockets :class:`~wsserver.poller.SelectPoller`
#: watches, the reactor's wake-up socket and the listening socket take two,
#: and 13 are room for connections still closing or being refused.
SELECT_MAX_CONNECTIONS = 496

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
    :param max_body_size: largest HTTP request body in bytes that a route
        takes whole (413 beyond; a route sets its own, and a route that
        streams its body defaults to 4 GiB). A whole body is made into
        ``bytes`` with one copy when it is complete, about 0.25 to 0.7 ms
        per MiB here, in one poll step: the 1 MiB default keeps that step
        within the budget.
    :param handshake_timeout: seconds from accept for the first request (and
        from the first byte for later ones) to arrive whole.
    :param keepalive_timeout: seconds an idle HTTP keep-alive connection is kept.
    :param close_timeout: seconds to wait for the peer's Close frame, or for
        the last bytes to drain, before dropping the connection.
    :param max_connections: most TCP connections at once (HTTP and
        WebSocket); beyond it new ones get 503. By default 1024, except
        where sockets are watched with ``select()`` (Windows), which takes
        512 at most: there the default is :data:`SELECT_MAX_CONNECTIONS`
        (496), and a larger value makes :meth:`start` raise ``ValueError``.
    :param write_limit: the high-water mark of a client's unsent output.
        Going over it refuses nothing: the client stops being ``writable``,
        is not read until it catches up, and has ``write_grace`` to drain.
    :param write_grace: seconds a client over its ``write_limit`` has to
        drain to its low-water mark (where ``on_drain`` runs) before it is
        closed with 1008; None never closes it for being slow.
    :param max_write_buffer: the hard cap on one client's unsent output; a
        message that would take it past the cap closes the client with 1008
        instead of being queued. Default: ``write_limit`` plus
        ``max_message_size`` (16 MiB when that is None).
    :param max_messages_per_second: if set, a client that sends faster is
        paused: its further messages wait, unread (TCP backpressure), until it
        is back within the rate, with a one-second burst. Nothing is dropped.
    :param max_bytes_per_second: the same for message bytes (characters for
        text).
    :param heartbeat_interval: seconds of silence from a client before a
        heartbeat frame is sent to it; None or -1 disables.
    :param heartbeat_timeout: seconds a client may stay silent after a
        heartbeat ping before it is dropped (1011); None disables.
    :param heartbeat_type: 9 (Ping, answered by the client) or 10 (Pong,
        one-way).
    :param heartbeat_data: the heartbeat frames' payload.
    :param origins: the browser origins allowed to open a WebSocket besides
        the server's own (see :mod:`wsserver.http.policy`); ``"*"`` allows
        any. An upgrade without ``Origin`` (a program, not a browser) is
        always allowed; any other gets 403.
    :param allowed_hosts: host names (``Host`` header) served besides
        ``localhost`` and IP addresses (loopback ones only on a loopback
        bind); a leading dot allows subdomains; ``"*"`` allows any. Others
        get 421: the defence against DNS rebinding.
    :param compression: how permessage-deflate (RFC 7692) is negotiated with
        clients that offer it (every browser does): see
        :class:`~wsserver.protocol.deflate.Compression` for the settings and
        their memory; None declines it.
    :param ssl_context: serve ``wss://`` and ``https://`` on the port with
        this server-side :class:`ssl.SSLContext` (see :mod:`wsserver.tls`
        for a self-signed one); ``start(..., ssl_context=...)`` sets it too.
        The TLS handshake is driven a step at a time inside :meth:`poll`.
    :param poll_budget: seconds of work one :meth:`poll` does at most.
    :param root: the document root that ``http_server`` serves files from
        (see :class:`~wsserver.http.server.HttpServer`); None for none.
    :param resume: resumable sessions for the clients that ask (see
        :mod:`wsserver.resume`): a page that drops and comes back within
        the :class:`~wsserver.resume.ResumePolicy`'s limits misses nothing
        either way, keeps its :class:`Client`, and ``on_resumed`` runs
        instead of ``on_open``. None (the default) turns them off.
    """

    translate_message = _TranslateHook()

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_request_line: int = 8 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        max_body_size: int = 1024 * 1024,
        handshake_timeout: float | None = 10.0,
        keepalive_timeout: float | None = 15.0,
        close_timeout: float = 10.0,
        max_connections: int | None = None,
        write_limit: int = 4 * 1024 * 1024,
        write_grace: float | None = 10.0,
        max_write_buffer: int | None = None,
        max_messages_per_second: float | None = None,
        max_bytes_per_second: float | None = None,
        heartbeat_interval: float | None = 20.0,
        heartbeat_timeout: float | None = 20.0,
        heartbeat_type: int = Opcode.PING,
        heartbeat_data: Data = b"",
        origins: str | Collection[str | None] | None = None,
        allowed_hosts: str | Collection[str] | None = None,
        compression: Compression | None = DEFAULT_COMPRESSION,
        ssl_context: ssl.SSLContext | None = None,
        poll_budget: float = 0.002,
        root: str | os.PathLike[str] | None = None,
        resume: ResumePolicy | None = None,
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
        self.max_connections = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
        self._max_connections_given = max_connections is not None
        self.write_limit = write_limit
        self.write_grace = write_grace
        self.max_write_buffer = max_write_buffer
        self.max_messages_per_second = max_messages_per_second
        self.max_bytes_per_second = max_bytes_per_second
        self.heartbeat_interval = None if heartbeat_interval is not None and heartbeat_interval < 0 else heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat_type = heartbeat_type
        self.heartbeat_data = heartbeat_data
        self.origins = origins
        self.allowed_hosts = allowed_hosts
        self.compression = compression
        self.ssl_context = ssl_context
        self.resume = resume

        self.on_open: Callable[[Client], Any] | None = None
        self.on_message: Callable[[Client, Message], Any] | None = None
        self.on_fragment: Callable[[Client, Fragment], Any] | None = None
        self.on_close: Callable[[Client, int, str], Any] | None = None
        self.on_client_closed: Callable[[Client], Any] | None = None
        self.on_error: Callable[[Client | None, BaseException], Any] | None = None
        self.on_drain: Callable[[Client], Any] | None = None
        #: A page came back to its resumable session; see :mod:`wsserver.resume`.
        self.on_resumed: Callable[[Client], Any] | None = None
        #: A page asked to resume a session that could not be (the reason
        #: given); it starts a new one, and ``on_open`` follows.
        self.on_resume_failed: Callable[[Client, str], Any] | None = None
        self.on_upgrade_to_websocket: Callable[[Client, Request, UpgradeResponse, list[str], str | None], Any] | None = None
        self.before_stop: Callable[[], Any] | None = None
        self.on_stopped: Callable[[], Any] | None = None

        self.reactor = Reactor(budget=poll_budget)
        self._context = ServerContext(self, self.reactor)
        self.http_server = HttpServer(self._context, root)
        self._listener: Any = None
        self._deprecated_hooks: dict[str, Callable[..., Any] | None] = {}
        # The thread that polls; None until the first start() or poll().
        self._owner: int | None = None
        self._stop_timer: Timer | None = None  # the deadline of a stop(wait=False)

    # -- life cycle ------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 128, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on ``host``:``port``; port 0 picks a free one. Raises ``OSError``.

        The default host is loopback: ``"0.0.0.0"`` or ``"::"`` exposes the
        server to the network (see ``origins``). ``ssl_context`` serves
        ``wss://`` and ``https://`` (as ``Server(ssl_context=...)``).
        """
        if self._listener is not None:
            raise RuntimeError("server already started")
        if ssl_context is not None:
            self.ssl_context = ssl_context
        if self.reactor.closed:
            raise RuntimeError("server was shut down")
        if self.resume is not None and self.on_fragment is not None:
            raise ValueError("resumable sessions number whole messages: on_fragment cannot be used with resume")
        self._fit_connections_to_poller()
        self._owner = get_ident()
        self._listener = self.reactor.listen(host, port, self._accept, backlog)

    @property
    def started(self) -> bool:
        return self._listener is not None

    def stop(self, timeout: float = 1.0, wait: bool = True) -> None:
        """Stop listening and close every connection.

        Runs ``before_stop``, then the ``"stop"`` listeners, sends every
        WebSocket client a 1001 Close frame, and gives the frames ``timeout``
        seconds to be flushed and the closing handshakes to finish;
        connections still open then are dropped. Then ``on_stopped`` runs,
        ``on_client_closed`` having run for every client, and ``start()``
        can listen on the same port again.

        By default this waits, pumping the reactor itself: the calling
        thread is busy for up to ``timeout`` (fine when the window is going
        away). With ``wait=False`` it returns at once and the closing
        handshakes finish across ordinary ``poll()`` steps, so the window
        stays responsive; ``on_stopped`` (or ``stopping`` turning False)
        tells when it is done.
        """
        if self._listener is None or self._context.stopping:
            return
        self._check_thread("stop")
        context = self._context
        context.stopping = True
        try:
            context.invoke(self.before_stop, None)
            context.notify("stop")
            self._listener.close()
            for driver in list(context.connections):
                driver.shutdown()
            for session in list(context.away):
                session.expire(CloseCode.GOING_AWAY, "server stopping")
        except BaseException:
            self._stopped()
            raise
        reactor = self.reactor
        if not wait:
            self._stop_timer = reactor.call_later(timeout, self._stopped)
            context.on_idle = self._stopped
            if not context.connections:
                self._stopped()
            return
        try:
            deadline = reactor.time() + timeout
            while context.connections and reactor.time() < deadline:
                reactor.poll(min(0.05, max(0.0, deadline - reactor.time())))
        finally:
            self._stopped()

    def _stopped(self) -> None:
        """End a stop: drop the connections still open, then run ``on_stopped``."""
        context = self._context
        if not context.stopping:
            return
        context.on_idle = None
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        for driver in list(context.connections):
            driver.stream.abort(TimeoutError("server stopped"))
        self._listener = None
        context.stopping = False
        self.reactor.stop()
        context.invoke(self.on_stopped, None)

    def shutdown(self) -> None:
        """:meth:`stop`, then release the reactor's own descriptors (the
        selector and its wake-up sockets). The server cannot start again."""
        self.stop()
        self.reactor.close()

    # -- extensions --------------------------------------------------------

    def add_listener(self, event: LifecycleEvent, callback: Callable[..., Any]) -> None:
        """Call ``callback`` on a lifecycle ``event``, beside the
        application's own callbacks; for extensions (a JSON-RPC layer, a
        session store) that must follow clients without taking over
        ``on_open`` or ``on_client_closed``. Any number may listen.

        * ``"open"``: ``callback(client)`` after the upgrade, before ``on_open``;
        * ``"close"``: ``callback(client)`` once per opened client, before
          ``on_client_closed``;
        * ``"stop"``: ``callback()`` when :meth:`stop` begins, after
          ``before_stop`` and before any client is closed.

        Listeners run in the order they were added; an exception goes to
        ``on_error``.
        """
        self._context.add_listener(event, callback)

    def remove_listener(self, event: LifecycleEvent, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` on ``event`` (nothing happens if it was not listening)."""
        self._context.remove_listener(event, callback)

    def _deprecated_hook(self, name: str, event: LifecycleEvent, hook: Callable[..., Any] | None) -> None:
        warnings.warn(f"Server.{name} is deprecated; use server.add_listener({event!r}, callback)", DeprecationWarning, stacklevel=3)
        old = self._deprecated_hooks.get(name)
        if old is not None:
            self.remove_listener(event, old)
        self._deprecated_hooks[name] = hook
        if hook is not None:
            self.add_listener(event, hook)

    @property
    def _on_client_closed(self) -> Callable[[Client], Any] | None:
        """Deprecated: ``add_listener("close", callback)``."""
        return self._deprecated_hooks.get("_on_client_closed")

    @_on_client_closed.setter
    def _on_client_closed(self, hook: Callable[[Client], Any] | None) -> None:
        self._deprecated_hook("_on_client_closed", "close", hook)

    @property
    def _before_stop(self) -> Callable[[], Any] | None:
        """Deprecated: ``add_listener("stop", callback)``."""
        return self._deprecated_hooks.get("_before_stop")

    @_before_stop.setter
    def _before_stop(self, hook: Callable[[], Any] | None) -> None:
        self._deprecated_hook("_before_stop", "stop", hook)

    # -- pumping ---------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> bool:
        """Do the ready network work and due timers; see :meth:`Reactor.poll`.
        The thread that polls is the one the server belongs to."""
        self._owner = get_ident()
        return self.reactor.poll(timeout)

    def serve_forever(self) -> None:
        """Poll until :meth:`stop` (for programs without a GUI loop)."""
        self._owner = get_ident()
        self.reactor.serve_forever()

    def fileno(self) -> int | None:
        return self.reactor.fileno()

    def next_deadline(self) -> float | None:
        return self.reactor.next_deadline()

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the polling thread soon. The one method
        that is safe to call from any thread: a worker thread sends with
        ``server.call_soon_threadsafe(server.publish, data)``."""
        self.reactor.call_soon_threadsafe(callback, *args)

    def _check_thread(self, method: str) -> None:
        """Refuse a call from a thread other than the polling one: the write
        buffers and timers are not locked, so it would race with ``poll()``.
        (A check costs one ``get_ident()``; handing every call over instead
        would hide the mistake and make ``send()``'s answer unknowable.)"""
        owner = self._owner
        if owner is not None and owner != get_ident():
            raise RuntimeError(
                f"Server.{method}() called from a thread that does not poll the server; "
                f"hand the call over with server.call_soon_threadsafe(server.{method}, ...)"
            )

    # -- sending ---------------------------------------------------------

    def send(self, client: Client | int, data: Data) -> bool:
        """Send ``data`` to one client: ``str`` as text, bytes-like as binary.

        True when the message is queued: it is delivered in order, or the
        connection ends with a Close code that says why. False only when
        nothing was queued because the client is closing or closed
        (including a client closed now, with 1008, because the message would
        take its unsent output past ``max_write_buffer``). Pace big senders
        with ``client.writable``, ``client.buffered_amount`` and ``on_drain``.
        A client of a resumable session that is away (``client.is_away``)
        takes it into its replay buffer, or ends now if that is full (see
        :mod:`wsserver.resume`).
        """
        if self._owner != get_ident():
            self._check_thread("send")
        if type(client) is Client and client._server is self:
            # The handle's state is its driver once upgraded: no lookup.
            return client._state.send_prepared(prepare_message(data, encode_late=True))
        driver = self._context.websockets.get(client if isinstance(client, int) else client.id)
        return driver is not None and driver.send_prepared(prepare_message(data, encode_late=True))

    def publish(self, data: Data, to: Iterable[Client | int] | None = None) -> bool:
        """Send ``data`` to every connected client (and every resumable
        one that is away), or to those in ``to`` (clients or ids; ones that
        are gone are passed over); the frame is encoded once and its bytes
        shared.

        True when every client that was open took it (see :meth:`send`: a
        client is never skipped while it stays open).
        """
        self._check_thread("publish")
        message = prepare_message(data, encode_late=True)
        drivers = list(self._context.websockets.values()) if to is None else [self._driver(client) for client in to]
        delivered = True
        for driver in drivers:
            if driver is not None and driver.takes_messages:
                delivered = driver.send_prepared(message) and delivered
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
        """Send one raw frame with explicit opcode, FIN and RSV bits.

        The protocol still follows it: a Close frame starts the closing
        handshake; ``fin=False`` starts a fragmented message that
        continuation frames (opcode 0) finish, and messages sent meanwhile
        wait behind it. Raises ``ValueError`` for a reserved opcode or a
        control frame that is not final or over 125 bytes, and
        :class:`~wsserver.protocol.InvalidState` for a continuation with
        nothing to continue. Returns as :meth:`send`.
        """
        self._check_thread("send_data")
        payload = as_bytes(data)
        check_frame(opcode, len(payload), fin)
        driver = self._driver(client)
        return driver is not None and driver.send_frame(opcode, payload, fin, rsv1, rsv2, rsv3)

    def close(self, client: Client | int, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason``; the
        connection ends when the client answers or ``close_timeout`` passes.
        What was sent to it before is delivered first."""
        self._check_thread("close")
        driver = self._driver(client)
        if driver is not None:
            driver.start_close(code, reason)

    def _driver(self, client: Client | int) -> Outlet | None:
        """Where the messages of an upgraded client (or client id) go, or None."""
        client_id = client if isinstance(client, int) else client.id
        return self._context.websockets.get(client_id)

    def _resolve(self, client: Client | int) -> Client | None:
        """The :class:`Client` that a client or a client id stands for."""
        return self.client(client) if isinstance(client, int) else client

    # -- queries ---------------------------------------------------------

    def client(self, client_id: int) -> Client | None:
        """The :class:`Client` with that id, while it is connected or connecting."""
        return self._context.clients.get(client_id)

    def clients(self) -> list[Client]:
        """Every WebSocket client now (connecting and closing ones included)."""
        return list(self._context.clients.values())

    def client_count(self) -> int:
        """WebSocket clients from their upgrade request until closed."""
        return len(self._context.clients)

    def connection_count(self) -> int:
        """Every open TCP connection: HTTP, upgrading and WebSocket."""
        return len(self._context.connections)

    @property
    def stopping(self) -> bool:
        """True while :meth:`stop` runs (from ``before_stop`` until it returns)."""
        return self._context.stopping

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
        return self._context.url("ws", path, use_lan_ip)

    def report_error(self, client: Client | None, exc: BaseException) -> None:
        """Hand ``exc`` to ``on_error`` (or log it), as the server does with
        an exception raised by a callback; for extensions."""
        self._context.report_error(client, exc)

    # -- internals -------------------------------------------------------

    def _fit_connections_to_poller(self) -> None:
        """Keep ``max_connections`` within what the poller can watch (select()
        on Windows): the default comes down with a log line, a value the
        application chose above it is an error."""
        capacity = self.reactor.poller.capacity
        if capacity is None or self.max_connections <= SELECT_MAX_CONNECTIONS:
            return
        if self._max_connections_given or self.max_connections != DEFAULT_MAX_CONNECTIONS:
            raise ValueError(
                f"max_connections={self.max_connections} is more than this platform's select() can watch: "
                f"it takes {capacity + 1} sockets, {capacity + 1 - SELECT_MAX_CONNECTIONS} of which the server keeps "
                f"for itself, so at most {SELECT_MAX_CONNECTIONS}"
            )
        logger.info("max_connections is %d: select(), this platform's poller, watches at most %d sockets", SELECT_MAX_CONNECTIONS, capacity + 1)
        self.max_connections = SELECT_MAX_CONNECTIONS

    def _accept(self, sock: socket.socket, address: Any) -> None:
        context = self._context
        full = len(context.connections) >= self.max_connections or context.stopping
        if self.ssl_context is not None:
            if full:
                # A 503 would cost a TLS handshake, when the server is full.
                sock.close()
                return
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        if full:
            if not self.reactor.poller.has_room():
                sock.close()  # select() (Windows) has no room for the 503's socket either
                return
            refusal = Stream(self.reactor, sock)
            refusal.write(render_head(503, [("Content-Length", "0"), ("Connection", "close"), ("Retry-After", "1")]))
            refusal.close()
            return
        context.connections.add(HttpDriver(context, sock))
