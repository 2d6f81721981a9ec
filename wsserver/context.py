"""The seam between a :class:`~wsserver.server.Server` and the drivers of its
connections.

A driver (:mod:`wsserver.drivers`) gets a :class:`ServerContext`, never the
server's internals: the options and application callbacks (the server's
public attributes), guarded calls into application code, the registry of
connections and clients, the lifecycle listeners, and whether the server is
stopping.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .client import CLOSED, Client
from .http.request import Request, RequestParser
from .lan import route_address
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, BufferPool, PreparedMessage, ProtocolError

if TYPE_CHECKING:
    from .reactor import Reactor, Stream
    from .resume import ResumableSession
    from .server import Server

__all__ = ["ServerContext", "Driver", "Outlet", "LifecycleEvent", "format_url"]

logger = logging.getLogger("wsserver")

#: What an extension may listen to: a client opened (after the upgrade, before
#: ``on_open``), a client closed (before ``on_client_closed``), the server is
#: stopping (after ``before_stop``, before any client is closed).
LifecycleEvent = Literal["open", "close", "stop"]


class Driver(Protocol):
    """One TCP connection's driver, as the server sees it."""

    stream: Stream

    def shutdown(self) -> None:
        """The server is stopping: end the connection gracefully (bounded by the stop timeout)."""


class Outlet(Protocol):
    """Where an upgraded client's messages go: its connection's driver, or
    its resumable session (which outlives connections)."""

    @property
    def takes_messages(self) -> bool:
        """Whether :meth:`send_prepared` may queue (the client is not closing or closed)."""

    def send_prepared(self, message: PreparedMessage) -> bool: ...

    def send_frame(self, opcode: int, payload: bytes, fin: bool, rsv1: bool, rsv2: bool, rsv3: bool) -> bool: ...

    def start_close(self, code: int, reason: str) -> None: ...


class ServerContext:
    """What connection drivers need from their server, and nothing else."""

    def __init__(self, server: Server, reactor: Reactor) -> None:
        #: The options and application callbacks, read as public attributes.
        self.server = server
        self.reactor = reactor
        #: The message buffers that every WebSocket connection of the server shares.
        self.buffers = BufferPool()
        #: True while :meth:`Server.stop` runs: no new connection, upgrade or message.
        self.stopping = False
        #: Every WebSocket client from its upgrade request until it is closed.
        self.clients: dict[int, Client] = {}
        #: The driver of every open TCP connection.
        self.connections: set[Driver] = set()
        #: The outlet of every upgraded client, by client id, until it is closed.
        self.websockets: dict[int, Outlet] = {}
        #: Every resumable session, by token, until it ends.
        self.sessions: dict[str, ResumableSession] = {}
        #: The resumable sessions whose page is away.
        self.away: set[ResumableSession] = set()
        #: Called once no connection is left (a stop that does not wait sets it).
        self.on_idle: Callable[[], Any] | None = None
        self._client_ids = itertools.count(1)
        self._listeners: dict[str, list[Callable[..., Any]]] = {"open": [], "close": [], "stop": []}

    # -- limits derived from the options -----------------------------------

    @property
    def max_write_buffer(self) -> int:
        """The hard cap on one client's queued output (see ``Server(max_write_buffer=...)``)."""
        server = self.server
        if server.max_write_buffer is not None:
            return server.max_write_buffer
        return server.write_limit + (server.max_message_size or DEFAULT_MAX_MESSAGE_SIZE)

    def request_parser(self) -> RequestParser:
        server = self.server
        return RequestParser(
            max_request_line=server.max_request_line,
            max_header_bytes=server.max_header_bytes,
            max_header_count=server.max_header_count,
            max_body_size=server.max_body_size,
            body_plan=server.http_server.body_plan,
        )

    # -- the registry ------------------------------------------------------

    def new_client(self, request: Request, remote_address: tuple[Any, ...]) -> Client:
        client = Client(next(self._client_ids), self.server, request, remote_address)
        self.clients[client.id] = client
        return client

    def forget_client(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        self.websockets.pop(client.id, None)

    def upgraded(self, http: Driver, websocket: Driver, client: Client, outlet: Outlet) -> None:
        """``websocket`` drives the connection from now on, instead of
        ``http``, and ``client``'s messages go to ``outlet``."""
        self.connections.discard(http)
        self.connections.add(websocket)
        self.websockets[client.id] = outlet

    def client_ended(self, client: Client, code: int, reason: str, opened: bool) -> None:
        """``client`` is closed for good, its close status being ``code`` and
        ``reason`` unless one was set before: it is forgotten, and if it
        was opened, the ``"close"`` listeners and ``on_client_closed`` run."""
        self.forget_client(client)
        client.attach_state(CLOSED)
        if client.close_code is None:
            client.close_code, client.close_reason = code, reason
        if opened:
            self.notify("close", client)
            self.invoke(self.server.on_client_closed, client, client)

    def connection_lost(self, driver: Driver) -> None:
        self.connections.discard(driver)
        if not self.connections and self.on_idle is not None:
            self.on_idle()

    # -- application code --------------------------------------------------

    def invoke(self, callback: Callable[..., Any] | None, client: Client | None, *args: Any) -> Any:
        """Call application code; an exception goes to ``on_error``, never up.

        Returns what the callback returned (None if it is unset or raised).
        """
        if callback is None:
            return None
        try:
            return callback(*args)
        except Exception as exc:
            self.report_error(client, exc)
            return None

    def report_error(self, client: Client | None, exc: BaseException) -> None:
        """Tell ``on_error`` (or the ``wsserver`` logger when it is unset or fails)."""
        handler = self.server.on_error
        if handler is not None:
            try:
                handler(client, exc)
                return
            except Exception:
                logger.exception("on_error raised while handling %r", exc)
        logger.error("error on %r: %s", client, exc, exc_info=exc if not isinstance(exc, ProtocolError) else None)

    # -- lifecycle listeners -----------------------------------------------

    def add_listener(self, event: LifecycleEvent, callback: Callable[..., Any]) -> None:
        self._listener_list(event).append(callback)

    def remove_listener(self, event: LifecycleEvent, callback: Callable[..., Any]) -> None:
        listeners = self._listener_list(event)
        if callback in listeners:
            listeners.remove(callback)

    def notify(self, event: LifecycleEvent, client: Client | None = None) -> None:
        """Call every listener of ``event`` (with the client, for open and close), guarded."""
        for callback in list(self._listeners[event]):
            if client is None:
                self.invoke(callback, None)
            else:
                self.invoke(callback, client, client)

    def _listener_list(self, event: str) -> list[Callable[..., Any]]:
        try:
            return self._listeners[event]
        except KeyError:
            raise ValueError(f"unknown lifecycle event {event!r}: 'open', 'close' or 'stop'") from None

    # -- addresses ---------------------------------------------------------

    @property
    def secure(self) -> bool:
        """Whether the server speaks TLS (``wss://`` and ``https://``)."""
        return self.server.ssl_context is not None

    def url(self, scheme: str, path: str = "", use_lan_ip: bool = False) -> str | None:
        """The server's URL with ``scheme`` (``"ws"`` or ``"http"``, made
        ``"wss"`` or ``"https"`` under TLS), or None if it is not listening."""
        if self.secure:
            scheme += "s"
        local = self.server.get_local_ip()
        return None if local is None else format_url(scheme, local, path, use_lan_ip)


def format_url(scheme: str, local: tuple[str, int], path: str = "", use_lan_ip: bool = False) -> str:
    """``scheme://host:port/path`` for a bound address. A wildcard bind shows
    as ``localhost``, or as the LAN address with ``use_lan_ip``: for ``::``
    (dual-stack: it takes IPv4 too) the IPv4 one when there is one, which
    every device on the LAN can reach, else the IPv6 one."""
    host, port = local
    if host in ("0.0.0.0", "::"):
        families = (socket.AF_INET, socket.AF_INET6) if host == "::" else (socket.AF_INET,)
        routes = (route_address(family) for family in families) if use_lan_ip else ()
        host = next((address for address in routes if address is not None), "localhost")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/{path.lstrip('/')}"
