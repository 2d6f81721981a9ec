"""The handles the application gets: :class:`Client` for a WebSocket
connection, :class:`UpgradeResponse` for the answer to an upgrade request.

They are thin: a :class:`Client` forwards to its server (which checks the
calling thread) and reads its state from the connection's driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .http.headers import Headers
from .http.request import Request
from .protocol import CloseCode, Data, Opcode, PreparedMessage

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Client", "UpgradeResponse", "ClientState"]


class ClientState(Protocol):
    """What a :class:`Client` reads from the driver of its connection."""

    @property
    def buffered_amount(self) -> int: ...

    @property
    def writable(self) -> bool: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def is_away(self) -> bool: ...

    def send_prepared(self, message: PreparedMessage) -> bool: ...


class _Unconnected:
    """The state of a client with no connection to send on: before its
    upgrade is answered, or once it is closed. (A closed client lets go of
    its driver, so that nothing of the connection outlives it in a
    reference cycle, waiting for the garbage collector.)"""

    buffered_amount = 0
    writable = False
    is_open = False
    is_away = False
    takes_messages = False

    def __init__(self, closed: bool) -> None:
        self.is_closed = closed

    def send_prepared(self, message: PreparedMessage) -> bool:
        return False


_BEFORE_UPGRADE = _Unconnected(closed=False)
#: The state of every closed client.
CLOSED = _Unconnected(closed=True)


class Client:
    """The handle of one WebSocket connection, passed to every callback for it.

    ``id`` is unique for the server's lifetime. ``request`` is the upgrade
    request (its ``path``, ``query`` and ``headers``); ``subprotocol`` the one
    chosen, if any; ``extensions`` the ``Sec-WebSocket-Extensions`` the
    server answered with (permessage-deflate's parameters), if any. After the connection ends, ``close_code`` and
    ``close_reason`` tell how (1006: it ended without a closing handshake).
    """

    __slots__ = ("id", "remote_address", "request", "subprotocol", "extensions", "close_code", "close_reason", "_server", "_state", "__weakref__")

    def __init__(self, client_id: int, server: Server, request: Request, remote_address: tuple[Any, ...]) -> None:
        self.id = client_id
        self.remote_address = remote_address
        self.request = request
        self.subprotocol: str | None = None
        self.extensions: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._server = server
        self._state: ClientState = _BEFORE_UPGRADE

    def attach_state(self, state: ClientState) -> None:
        """Called by the driver that takes the connection over after the upgrade."""
        self._state = state

    def send(self, data: Data) -> bool:
        """Send a message; see :meth:`Server.send`."""
        return self._server.send(self, data)

    def send_data(self, data: Data, opcode: int = Opcode.BINARY, fin: bool = True, rsv1: bool = False, rsv2: bool = False, rsv3: bool = False) -> bool:
        """Send one raw frame; see :meth:`Server.send_data`."""
        return self._server.send_data(self, data, opcode, fin, rsv1, rsv2, rsv3)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; see :meth:`Server.close`."""
        self._server.close(self, code, reason)

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for this client and not yet handed to the kernel."""
        return self._state.buffered_amount

    @property
    def writable(self) -> bool:
        """False while ``write_limit`` bytes or more wait for this client
        (and until they drain to the low-water mark, when ``on_drain``
        runs); messages sent meanwhile are still queued, not refused."""
        return self._state.writable

    @property
    def is_connected(self) -> bool:
        """Whether messages may be sent to it (open, no Close frame sent)."""
        return self._state.is_open

    @property
    def is_closed(self) -> bool:
        return self._state.is_closed

    @property
    def is_away(self) -> bool:
        """Whether its resumable session waits for the page to come back
        (see :mod:`wsserver.resume`): what is sent meanwhile is kept for it."""
        return self._state.is_away

    def __repr__(self) -> str:
        host, port = self.remote_address[:2]
        return f"<Client {self.id} {host}:{port}>"


class UpgradeResponse:
    """The answer to an upgrade request, as ``on_upgrade_to_websocket`` sees it.

    Set ``headers["Sec-WebSocket-Protocol"]`` to pick one of the offered
    subprotocols, add any other header, or refuse the upgrade with
    :meth:`error_status` (an HTTP error answer) or :meth:`close` (the
    connection is dropped without an answer).
    """

    __slots__ = ("headers", "refused_status", "refused_body", "dropped")

    def __init__(self) -> None:
        self.headers = Headers()
        self.refused_status: int | None = None
        self.refused_body = ""
        self.dropped = False

    def error_status(self, code: int = 403, body: str = "") -> None:
        """Refuse the upgrade with HTTP status ``code`` and a short text ``body``."""
        if not 400 <= code <= 599:
            raise ValueError("an upgrade is refused with a 4xx or 5xx status")
        self.refused_status = code
        self.refused_body = body

    def close(self) -> None:
        """Refuse the upgrade by closing the connection without an answer."""
        self.dropped = True

    @property
    def refused(self) -> bool:
        return self.dropped or self.refused_status is not None
