"""One TCP connection of a :class:`~wsserver.server.Server`, and the handles
the application gets for it.

:class:`Peer` is the reactor's :class:`~wsserver.reactor.StreamHandler` for
an accepted socket: it serves HTTP requests on it and, after an upgrade,
runs the WebSocket protocol, holding the connection's timers (handshake,
close, heartbeat, write grace). It reaches application code only through
the server's guarded ``_invoke``. :class:`Client` is the application's
handle of a WebSocket connection; :class:`UpgradeResponse` is what
``on_upgrade_to_websocket`` answers with.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

from .http.headers import Headers
from .http.request import HttpError, Request, RequestParser
from .http.response import SERVER_NAME, Response, http_date, render_head
from .http.sse import EventStream
from .protocol import (
    CloseCode,
    CloseReceived,
    Connection,
    Failure,
    Fragment,
    HandshakeError,
    Message,
    Opcode,
    ProtocolError,
    State,
    encode_frame,
    parse_upgrade,
)
from .protocol.handshake import accept_headers, is_upgrade_request
from .reactor import Stream, Timer

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Client", "UpgradeResponse", "Peer", "Data", "as_payload", "encode_message"]

#: Anything :meth:`Server.send` accepts: text goes as a text message, any
#: bytes-like object (bytes, bytearray, memoryview, array, ctypes structure)
#: as a binary one.
Data = Union[str, bytes, bytearray, memoryview, Any]


class Client:
    """The handle of one WebSocket connection, passed to every callback for it.

    ``id`` is unique for the server's lifetime. ``request`` is the upgrade
    request (its ``path``, ``query`` and ``headers``); ``subprotocol`` the one
    chosen, if any. After the connection ends, ``close_code`` and
    ``close_reason`` tell how (1006: it ended without a closing handshake).
    """

    __slots__ = ("id", "remote_address", "request", "subprotocol", "close_code", "close_reason", "_peer", "__weakref__")

    def __init__(self, client_id: int, peer: Peer, request: Request) -> None:
        self.id = client_id
        self.remote_address: tuple = peer.stream.peer_address
        self.request = request
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._peer = peer

    def send(self, data: Data) -> bool:
        """Send a message; see :meth:`Server.send`."""
        return self._peer.server.send(self, data)

    def send_data(self, data: Data, opcode: int = Opcode.BINARY, fin: bool = True, rsv1: bool = False, rsv2: bool = False, rsv3: bool = False) -> bool:
        """Send one raw frame; see :meth:`Server.send_data`."""
        return self._peer.server.send_data(self, data, opcode, fin, rsv1, rsv2, rsv3)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; see :meth:`Server.close`."""
        self._peer.server.close(self, code, reason)

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for this client and not yet handed to the kernel."""
        return self._peer.stream.buffered_amount

    @property
    def is_connected(self) -> bool:
        return self._peer.is_open

    @property
    def is_closed(self) -> bool:
        return self._peer.stream.closed

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


class Phase(enum.Enum):
    HTTP = "http"
    WEBSOCKET = "websocket"


class Peer:
    """One accepted TCP connection: HTTP requests, then maybe WebSocket.

    It is the reactor's :class:`~wsserver.reactor.StreamHandler` for the
    socket, and holds the connection's timers.
    """

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.reactor = server.reactor
        self.phase = Phase.HTTP
        self.parser: RequestParser | None = server._request_parser()
        self.ws: Connection | None = None
        self.client: Client | None = None
        self.opened = False  # on_open ran, so on_client_closed is owed
        self._body: Any = None  # the iterator of a streamed response body
        self._body_resume: Timer | None = None  # the next poll step's turn at pumping it
        self._chunked = False
        self._keep_alive = True
        self._timer: Timer | None = None
        self._heartbeat_timer: Timer | None = None
        self._backlog_timer: Timer | None = None  # runs while the client is over its write_limit
        self.last_seen = self.reactor.time()
        self._ping_sent_at: float | None = None
        self.stream = Stream(self.reactor, sock, self)
        self._set_timer(server.handshake_timeout, self._request_timed_out)

    # -- timers ----------------------------------------------------------

    def _set_timer(self, delay: float | None, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.reactor.call_later(delay, callback) if delay is not None and delay > 0 else None

    def _request_timed_out(self) -> None:
        self._timer = None
        if self.phase is Phase.HTTP and self._body is None:
            if self.parser is not None and self.parser.has_partial_request:
                self._send_error(408, "request not received in time")
            else:
                self.stream.close()

    def _close_timed_out(self) -> None:
        self._timer = None
        self.stream.abort(TimeoutError("closing handshake timed out"))

    # -- StreamHandler ---------------------------------------------------

    def data_received(self, data: memoryview) -> None:
        self.last_seen = self.reactor.time()
        if self.phase is Phase.WEBSOCKET:
            self._ws_received(data)
            return
        assert self.parser is not None
        if self._timer is None and not self.parser.has_partial_request:
            # The first byte of a new request on a kept-alive connection.
            self._set_timer(self.server.handshake_timeout, self._request_timed_out)
        self.parser.feed(data)
        self._serve_requests()

    def eof_received(self) -> bool:
        # A client may send its request and then shut down its sending side:
        # an answer still streaming to it goes on, and ends the connection.
        if self.phase is Phase.HTTP and self._body is not None:
            self._keep_alive = False
            return True
        return False

    def write_drained(self) -> None:
        if self._body is not None:
            self._pump_body()
        elif self.client is not None and self.opened:
            # It caught up: the grace period is over, and it is heard again.
            if self._backlog_timer is not None:
                self._backlog_timer.cancel()
                self._backlog_timer = None
            self.stream.resume_reading()
            self.server._invoke(self.server.on_drain, self.client, self.client)

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._timer, self._heartbeat_timer, self._backlog_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._heartbeat_timer = self._backlog_timer = None
        self._release_body()
        self.server._peers.discard(self)
        client = self.client
        if client is None:
            return
        self.server._clients.pop(client.id, None)
        if client.close_code is None:
            ws = self.ws
            # A Close frame of ours that was never answered is no closing
            # handshake (1006); one that failed the connection tells why it ended.
            closed = ws.close_received or (ws.close_sent if ws.state is State.CLOSED else None) if ws is not None else None
            client.close_code, client.close_reason = closed if closed else (CloseCode.ABNORMAL, "")
        if self.opened:
            self.opened = False
            self.server._invoke(self.server._on_client_closed, client, client)
            self.server._invoke(self.server.on_client_closed, client, client)

    # -- HTTP ------------------------------------------------------------

    def _serve_requests(self) -> None:
        parser = self.parser
        http_server = self.server.http_server
        while self.phase is Phase.HTTP and self._body is None and not self.stream.is_closing:
            assert parser is not None
            try:
                request = parser.next_request()
            except HttpError as exc:
                self._send_error(exc.status, exc.message)
                return
            if request is None:
                return
            self._set_timer(None, self._request_timed_out)
            request.client_address = self.stream.peer_address
            if is_upgrade_request(request.headers):
                if http_server.accepts_websocket(request.path):
                    self._upgrade(request)
                else:
                    self._send_error(404, "no WebSocket on this path")
            else:
                self._keep_alive = request.keep_alive and not self.server._stopping
                self._send_response(request, http_server.handle(request))
        if self._body is not None and parser is not None and parser.buffered_size > parser.max_request_line + parser.max_header_bytes:
            # A client that keeps pipelining while a long answer streams:
            # read no more until the answer is done, so the backlog stays bounded.
            self.stream.pause_reading()

    def _send_error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        """Answer with an error (the application's error page, if it has one) and close the connection."""
        self._keep_alive = False
        self._send_response(None, self.server.http_server.error_response(status, message, headers or ()))

    def _send_response(self, request: Request | None, response: Response) -> None:
        headers = Headers([("Date", http_date()), ("Server", SERVER_NAME)])
        for name, value in response.headers.raw_items():
            headers.add(name, value)
        body = response.body
        has_body = request is None or request.method != "HEAD"
        no_body_status = response.status in (204, 304) or response.status < 200
        http10 = request is not None and request.version == "HTTP/1.0"
        self._chunked = False
        if isinstance(body, (bytes, bytearray, memoryview)):
            if not no_body_status:
                headers["Content-Length"] = str(len(body))
            chunks = None
        else:
            chunks = iter(body)
            if "Content-Length" not in headers and not no_body_status:
                if http10:
                    self._keep_alive = False  # HTTP/1.0 has no chunked coding: the close ends the body
                else:
                    self._chunked = True
                    headers["Transfer-Encoding"] = "chunked"
        if not self._keep_alive:
            headers["Connection"] = "close"
        elif http10:
            headers["Connection"] = "keep-alive"
        self.stream.write(render_head(response.status, headers.raw_items()))
        if chunks is not None:
            self._body = chunks
        if not has_body or no_body_status:
            self._release_body()
            self._finish_response()
        elif chunks is None:
            self.stream.write(body)  # type: ignore[arg-type]
            self._finish_response()
        else:
            if isinstance(chunks, EventStream):
                stream = self.stream
                chunks._attach(self._pump_body, lambda: stream.buffered_amount, self.server.write_limit)
            self._pump_body()

    def _pump_body(self) -> None:
        """Write streamed body chunks while the socket keeps up, for at most
        one poll budget; the rest goes on at the next poll step."""
        stream = self.stream
        reactor = self.reactor
        stop_at = reactor.time() + reactor.budget
        while self._body is not None and stream.buffered_amount <= stream.low_water and not stream.is_closing:
            if reactor.time() >= stop_at:
                # The kernel keeps taking bytes (a fast reader of a big file):
                # yield the GUI thread, resume on the next step.
                if self._body_resume is None:
                    self._body_resume = reactor.call_later(0, self._resume_body)
                return
            try:
                chunk = next(self._body)
            except StopIteration:
                self._release_body()
                if self._chunked:
                    stream.write(b"0\r\n\r\n")
                self._finish_response()
                return
            except Exception as exc:
                self.server._report_error(None, exc)
                self._release_body()
                stream.abort(exc)  # the answer is cut short: the client must not take it as whole
                return
            if chunk is None and isinstance(self._body, EventStream):
                return  # nothing to send yet: the stream resumes the pump when it has
            if chunk:
                stream.write(b"%x\r\n" % len(chunk), chunk, b"\r\n") if self._chunked else stream.write(chunk)

    def _resume_body(self) -> None:
        self._body_resume = None
        self._pump_body()

    def _release_body(self) -> None:
        """Forget the streamed body, closing it (a file, an event stream) if it can be."""
        body, self._body = self._body, None
        if self._body_resume is not None:
            self._body_resume.cancel()
            self._body_resume = None
        close = getattr(body, "close", None)
        if close is not None:
            self.server._invoke(close, None)

    def stop_http(self) -> None:
        """The server is stopping: close an idle connection, end an event
        stream, and let a download finish (within the stop timeout)."""
        if self._body is None:
            self.stream.close()
        elif isinstance(self._body, EventStream):
            self.server._invoke(self._body.close, None)

    def _finish_response(self) -> None:
        if not self._keep_alive or self.server._stopping:
            self.stream.close()
            return
        self._set_timer(self.server.keepalive_timeout, self._request_timed_out)
        self.stream.resume_reading()
        if self.parser is not None and self.parser.has_partial_request:
            self._serve_requests()  # pipelined requests waiting behind a streamed answer

    # -- the upgrade -----------------------------------------------------

    def _upgrade(self, request: Request) -> None:
        server = self.server
        if server._stopping:
            self._send_error(503, "server is stopping")
            return
        try:
            offer = parse_upgrade(request.method, request.version, request.headers)
        except HandshakeError as exc:
            self._send_error(exc.status, exc.message, exc.headers)
            return
        if server.origins is not None and offer.origin not in server.origins:
            self._send_error(403, "origin not allowed")
            return
        client = Client(next(server._client_ids), self, request)
        self.client = client
        server._clients[client.id] = client
        response = UpgradeResponse()
        hook = server.on_upgrade_to_websocket
        if hook is not None:
            try:
                hook(client, request, response, offer.subprotocols, offer.origin)
            except Exception as exc:
                server._report_error(client, exc)
                response.error_status(500, "upgrade hook failed")
        subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        if not response.refused and subprotocol is not None and subprotocol not in offer.subprotocols:
            server._report_error(client, ValueError(f"subprotocol {subprotocol!r} was not offered by the client"))
            response.error_status(500, "server chose a subprotocol the client did not offer")
        if response.refused:
            server._clients.pop(client.id, None)
            self.client = None
            if response.dropped:
                self.stream.close()
            else:
                self._send_error(response.refused_status or 403, response.refused_body)
            return
        headers = accept_headers(offer.key, subprotocol)
        chosen = {name.lower() for name, _ in headers}
        headers += [(n, v) for n, v in response.headers.raw_items() if n.lower() not in chosen]
        self.stream.write(render_head(101, headers))
        client.subprotocol = subprotocol
        self.ws = Connection(server.max_message_size, deliver_fragments=server.on_fragment is not None)
        self.phase = Phase.WEBSOCKET
        # on_drain must follow every refused send(): that needs the low-water
        # mark below write_limit, whatever the reactor's write slice.
        self.stream.low_water = min(self.stream.low_water, server.write_limit // 2)
        assert self.parser is not None
        leftover = self.parser.take_buffered()
        self.parser = None
        self.opened = True
        self._arm_heartbeat()
        server._invoke(server.on_open, client, client)
        if leftover and not self.stream.is_closing:
            self._ws_received(leftover)

    # -- WebSocket -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.can_send and not self.stream.is_closing

    @property
    def backlogged(self) -> bool:
        """Whether the client has ``write_limit`` bytes or more waiting for it."""
        return self.stream.buffered_amount >= self.server.write_limit

    def _ws_received(self, data: bytes | memoryview) -> None:
        ws = self.ws
        client = self.client
        assert ws is not None and client is not None
        events = ws.receive_data(data)
        self._write_protocol_output()
        server = self.server
        for event in events:
            if self.stream.closed:
                break  # a callback stopped the server or dropped us: on_client_closed already ran
            if isinstance(event, Message):
                if server._stopping:
                    continue
                if server.translate_message is not None and server._invoke(server.translate_message, client, client, event):
                    continue
                server._invoke(server.on_message, client, client, event)
            elif isinstance(event, Fragment):
                if not server._stopping:
                    server._invoke(server.on_fragment, client, client, event)
            elif isinstance(event, CloseReceived):
                server._invoke(server.on_close, client, client, event.code, event.reason)
            elif isinstance(event, Failure):
                server._report_error(client, ProtocolError(event.reason, event.code))
        if ws.state is State.CLOSED:
            # The closing handshake is over (or the connection failed): the
            # server closes TCP first (RFC 6455 section 7.1.1).
            self._close_stream()
        elif self.backlogged:
            # A client that does not read what it is sent is not read either
            # until it catches up: its input makes output (pongs at least)
            # that no write_limit refusal would bound.
            self.stream.pause_reading()

    def _write_protocol_output(self) -> None:
        assert self.ws is not None
        out = self.ws.data_to_send()
        if out:
            # One buffer for a whole read's worth of pongs, not one each.
            self.write_frames(b"".join(out))

    def write_frames(self, *parts: bytes) -> None:
        """Queue WebSocket output. A client that this leaves at or over its
        ``write_limit`` has ``write_grace`` seconds to catch up (drain to its
        low-water mark, when ``on_drain`` runs) before it is closed."""
        self.stream.write(*parts)
        grace = self.server.write_grace
        if grace is not None and self._backlog_timer is None and self.backlogged and self.is_open:
            self._backlog_timer = self.reactor.call_later(grace, self._backlog_timed_out)

    def _backlog_timed_out(self) -> None:
        """Close a client that did not catch up within ``write_grace`` with
        1008; its Close frame waits behind the backlog, so ``close_timeout``
        drops TCP if the client still does not read."""
        self._backlog_timer = None
        client = self.client
        if client is None or not self.is_open:
            return
        reason = "client does not read what it is sent"
        client.close_code, client.close_reason = CloseCode.POLICY_VIOLATION, reason
        self.server._report_error(client, TimeoutError(reason))
        self.start_close(CloseCode.POLICY_VIOLATION, reason)

    def _close_stream(self) -> None:
        self.stream.close()
        if not self.stream.closed:
            self._set_timer(self.server.close_timeout, self._close_timed_out)

    def start_close(self, code: int, reason: str) -> None:
        """Send a Close frame and wait (at most ``close_timeout``) for the peer's."""
        ws = self.ws
        if ws is None or not ws.can_send:
            return
        ws.close(code, reason)
        self._write_protocol_output()
        self._set_timer(self.server.close_timeout, self._close_timed_out)

    # -- heartbeat -------------------------------------------------------

    def _arm_heartbeat(self, when: float | None = None) -> None:
        interval = self.server.heartbeat_interval
        if interval is None or interval <= 0:
            return
        if when is None:
            when = self.last_seen + interval
        self._heartbeat_timer = self.reactor.call_at(when, self._heartbeat)

    def _heartbeat(self) -> None:
        """Ping a client that has been quiet for ``heartbeat_interval``, and
        drop one that then stays silent for ``heartbeat_timeout``."""
        self._heartbeat_timer = None
        if not self.is_open:
            return
        server = self.server
        now = self.reactor.time()
        interval = server.heartbeat_interval or 0.0
        timeout = server.heartbeat_timeout
        if self._ping_sent_at is not None:
            if self.last_seen >= self._ping_sent_at:
                self._ping_sent_at = None
            elif timeout is not None and now >= self._ping_sent_at + timeout:
                self._fail(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                return
            else:
                self._arm_heartbeat(self._ping_sent_at + (timeout or interval))
                return
        due = self.last_seen + interval
        if now < due:
            self._arm_heartbeat(due)
            return
        self.write_frames(*encode_frame(server.heartbeat_type, as_payload(server.heartbeat_data)))
        if server.heartbeat_type == Opcode.PING and timeout is not None and timeout > 0:
            self._ping_sent_at = now
            self._arm_heartbeat(now + min(timeout, interval))
        else:
            self._arm_heartbeat(now + interval)

    def _fail(self, code: int, reason: str) -> None:
        """Give up on a peer that does not answer: send a Close frame and drop TCP at once."""
        client = self.client
        assert self.ws is not None and client is not None
        self.ws.close(code, reason)
        self._write_protocol_output()
        client.close_code, client.close_reason = code, reason
        self.server._report_error(client, TimeoutError(reason))
        self.stream.abort(TimeoutError(reason))


def as_payload(data: Data) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    return memoryview(data).cast("B").tobytes()


def encode_message(data: Data) -> tuple[bytes, ...]:
    if isinstance(data, str):
        return encode_frame(Opcode.TEXT, data.encode("utf-8"))
    return encode_frame(Opcode.BINARY, as_payload(data))
