"""The HTTP driver: one TCP connection from accept to its last response, or
to its WebSocket upgrade.

It feeds the socket's bytes to the incremental
:class:`~wsserver.http.request.RequestParser`, answers each request through
the application's :class:`~wsserver.http.server.HttpServer`, frames the
answer with :func:`~wsserver.http.framing.plan_response` and streams long
bodies a slice at a time within the poll budget. Pipelined requests are
served in a loop, in order. The body of a route that streams it goes to
a :class:`~wsserver.http.uploads.BodyReceiver` a slice at a time, also
within the budget. An upgrade request that is accepted hands the
connection to a :class:`~wsserver.drivers.websocket.WebSocketDriver`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..client import UpgradeResponse
from ..http.framing import BodyFraming, end_of_body, frame_chunk, plan_response
from ..http.policy import host_allowed, origin_allowed
from ..http.request import HttpError, Request
from ..http.response import Response, render_head
from ..http.sse import EventStream
from ..http.uploads import BodyReceiver, delete_in_slices
from ..protocol import CloseCode, HandshakeError, PerMessageDeflate, negotiate, parse_upgrade
from ..protocol.handshake import accept_headers, is_upgrade_request
from ..reactor import Stream
from ..resume import ResumeClaim
from .websocket import WebSocketDriver

if TYPE_CHECKING:
    from ..context import ServerContext
    from ..reactor import Timer

__all__ = ["HttpDriver", "REQUESTS_PER_TURN", "UPLOAD_SLICE"]

logger = logging.getLogger("wsserver")

#: Pipelined requests one turn answers at most; the rest wait for the
#: connection's next turn, behind the other ready connections.
REQUESTS_PER_TURN = 32
#: The bytes of a streamed body handed to its receiver at a time.
UPLOAD_SLICE = 64 * 1024


class HttpDriver:
    """Serves HTTP on one accepted socket; the :class:`Stream`'s handler until an upgrade."""

    def __init__(self, context: ServerContext, sock: socket.socket) -> None:
        self.context = context
        self.reactor = context.reactor
        self.parser = context.request_parser()
        # The response being streamed, if any: its chunks, its framing, and
        # the next poll step's turn at pumping it.
        self._body: Iterator[bytes | None] | None = None
        self._framing = BodyFraming.NONE
        self._body_resume: Timer | None = None
        # Runs while an event stream has more than write_limit waiting.
        self._grace_timer: Timer | None = None
        self._keep_alive = True
        self._input_ended = False  # the client shut down its sending side
        self._upgraded = False
        self._turn_pending = False  # pipelined requests wait for the next turn
        # The request whose Expect header was answered (its body is coming).
        self._expectation_met: Request | None = None
        # The streamed body being received, and when it last made progress.
        self._upload: BodyReceiver | None = None
        self._upload_progress = 0.0
        # The request timeout (from accept, or from a request's first byte)
        # or, between requests, the keep-alive timeout.
        self._timer: Timer | None = None
        self.stream = Stream(self.reactor, sock, self)
        self._set_timer(context.server.handshake_timeout)

    # -- timers ------------------------------------------------------------

    def _set_timer(self, delay: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.reactor.call_later(delay, self._timed_out) if delay is not None and delay > 0 else None

    def _timed_out(self) -> None:
        self._timer = None
        if self._upload is not None:
            # A streamed body may take long: only a stall of the timeout ends it.
            timeout = self.context.server.handshake_timeout or 0.0
            idle = self.reactor.time() - self._upload_progress
            if idle < timeout:
                self._set_timer(timeout - idle)
            else:
                self._fail_upload(HttpError(408, "request body stalled"))
        elif self._body is None:
            if self.parser.has_partial_request:
                self._send_error(408, "request not received in time")
            else:
                self.stream.close()

    # -- StreamHandler -----------------------------------------------------

    def data_received(self, data: memoryview) -> None:
        if self._timer is None and not self.parser.has_partial_request:
            # The first byte of a new request on a kept-alive connection.
            self._set_timer(self.context.server.handshake_timeout)
        self.parser.feed(data)
        if self._upload is not None:
            self._upload_progress = self.reactor.time()
        self._serve_requests()

    def eof_received(self) -> bool:
        # A client may send its requests and then shut down its sending
        # side: an answer still streaming goes on, the requests pipelined
        # behind it are answered too, and then the connection ends.
        if self._body is not None or self.parser.buffered_size:
            self._input_ended = True
            return True
        return False

    def turn(self) -> None:
        self._turn_pending = False
        if self._body is None:
            self.stream.resume_reading()
        self._serve_requests()

    def write_drained(self) -> None:
        if self._body is not None and self._pump_body():
            self._serve_requests()  # pipelined requests waiting behind a streamed answer
        body = self._body
        if self._grace_timer is not None and (not isinstance(body, EventStream) or body.buffered_amount <= self.context.server.write_limit):
            self._grace_timer.cancel()  # it caught up
            self._grace_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._set_timer(None)
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self._release_body()
        self._abort_upload()
        self.context.connection_lost(self)

    def shutdown(self) -> None:
        """The server is stopping: close an idle connection, end an event
        stream, and let a download finish (within the stop timeout)."""
        if self._body is None:
            self.stream.close()
        elif isinstance(self._body, EventStream):
            self.context.invoke(self._body.close, None)

    # -- requests ----------------------------------------------------------

    def _serve_requests(self) -> None:
        """Answer the complete requests received, in order, until one needs
        more time (a streamed answer) or the connection ends or upgrades."""
        if self._upload is not None and not self._pump_upload():
            return
        parser = self.parser
        context = self.context
        reactor = self.reactor
        served = 0
        while self._body is None and self._upload is None and not self._upgraded and not self.stream.is_closing:
            # Many pipelined requests: the others go first. (With nothing
            # left to parse, the loop goes on to find that out, and to close
            # a connection whose input has ended: no more input would come
            # to give it another turn.)
            if served and (parser.has_partial_request or parser.buffered_size) and (served >= REQUESTS_PER_TURN or reactor.time() >= reactor.step_deadline):
                self._wait_for_turn()
                return
            served += 1
            try:
                request = parser.next_request()
            except HttpError as exc:
                self._send_error(exc.status, exc.message)
                return
            if request is None:
                if self._input_ended:
                    self.stream.close()  # every request the client sent is answered
                elif parser.awaiting_body is not None and parser.awaiting_body is not self._expectation_met:
                    self._meet_expectation(parser.awaiting_body)
                return
            self._set_timer(None)
            request.client_address = self.stream.peer_address
            host = request.headers.get("Host")
            if not host_allowed(host, self._bound_host(), context.server.allowed_hosts):
                # DNS rebinding: a foreign name resolved to this machine.
                logger.warning("refused a request for Host %r from %s (not an allowed host; see allowed_hosts)", host, request.client_address[0])
                self._send_error(421, f"host {host!r} is not served here", request=request)
                return
            context.server.http_server.open_session(request)
            if is_upgrade_request(request.headers):
                if context.server.http_server.accepts_websocket(request.path):
                    self._upgrade(request)
                else:
                    self._send_error(404, "no WebSocket on this path", request=request)
            else:
                self._keep_alive = request.keep_alive and not context.stopping
                http = context.server.http_server
                # A body to stream refused from its head (the guard's answer)
                # is never read: the connection ends with the answer.
                refusal = http.refusal(request) if parser.body_streaming else None
                if refusal is not None:
                    self._keep_alive = False
                    self._respond(request, refusal)
                    return
                try:
                    # A route that streams its body, and a body to stream.
                    receiver = http.body_receiver(request) if parser.body_streaming else None
                except HttpError as exc:
                    self._send_error(exc.status, exc.message, request=request)
                    return
                if receiver is None:
                    self._respond(request, http.handle(request))
                elif not self._start_upload(receiver):
                    return
        if self._body is not None and parser.buffered_size > parser.max_request_line + parser.max_header_bytes:
            # A client that keeps pipelining while a long answer streams:
            # read no more until the answer is done, so the backlog stays bounded.
            self.stream.pause_reading()

    def _wait_for_turn(self) -> None:
        """Stop here for this poll step: the other ready connections go
        first, and reading waits (so the backlog stays bounded) until the
        connection's next turn."""
        self._turn_pending = True
        self.stream.pause_reading()
        self.stream.request_turn()

    # -- streamed bodies in ---------------------------------------------------

    def _start_upload(self, receiver: BodyReceiver) -> bool:
        """Receive a streamed body; return whether it is all in and answered."""
        self._upload = receiver
        self._upload_progress = self.reactor.time()
        self._meet_expectation(receiver.request)
        if self.stream.is_closing:  # an expectation it cannot meet
            self._abort_upload()
            return True
        self._set_timer(self.context.server.handshake_timeout)
        return self._pump_upload()

    def _pump_upload(self) -> bool:
        """Hand the body's bytes to the receiver a slice at a time until the
        poll step's budget is spent (the rest waits for the connection's
        next turn, reading paused, so the backlog stays bounded); once the
        body is whole, run the handler and answer. Return whether the
        upload is over."""
        upload = self._upload
        assert upload is not None
        parser = self.parser
        reactor = self.reactor
        try:
            while (piece := parser.read_body(UPLOAD_SLICE)) is not None:
                upload.feed(piece)
                if reactor.time() >= reactor.step_deadline and parser.buffered_size:
                    self._wait_for_turn()
                    return False
            if parser.body_streaming:
                if self._input_ended:
                    raise HttpError(400, "the connection's input ended before the body")
                return False
            upload.finish()
        except HttpError as exc:
            self._fail_upload(exc)
            return True
        except Exception as exc:  # a sink failed: a full disk, the application's code
            self.context.report_error(None, exc)
            self._fail_upload(HttpError(500, "the upload could not be stored"))
            return True
        self._upload = None
        self._set_timer(None)
        request = upload.request
        try:
            response = self.context.server.http_server.handle(request)
        finally:
            self._delete_files(upload.release())
        self._respond(request, response)
        return True

    def _fail_upload(self, error: HttpError) -> None:
        request = self._upload.request if self._upload is not None else None
        self._abort_upload()
        self._send_error(error.status, error.message, request=request)

    def _abort_upload(self) -> None:
        """Discard the body being received (temporary files, sinks)."""
        upload, self._upload = self._upload, None
        if upload is None:
            return
        try:
            upload.abort()
        except Exception as exc:  # an application sink's close() or discard()
            self.context.report_error(None, exc)
        self._delete_files(upload.release())

    def _delete_files(self, paths: list[Path]) -> None:
        """Delete temporary files a slice per poll step, so that no step
        frees a whole big file (see :func:`delete_in_slices`)."""
        for path in paths:
            self._delete_step(delete_in_slices(path))

    def _delete_step(self, steps: Iterator[None]) -> None:
        try:
            next(steps)
        except StopIteration:
            return
        except OSError as exc:
            self.context.report_error(None, exc)
            return
        self.reactor.call_later(0, self._delete_step, steps)

    def _meet_expectation(self, request: Request) -> None:
        """Answer ``Expect: 100-continue`` (RFC 9110 section 10.1.1) once the
        head is in and the body is not: ``100 Continue`` when the body will
        be read, or the final answer at once when the head decides it (the
        connection then closes, the body unread); 417 for an expectation
        other than 100-continue."""
        self._expectation_met = request
        expectation = request.headers.get("Expect")
        if expectation is None or request.version != "HTTP/1.1":
            return
        if expectation.strip().lower() != "100-continue":
            self._send_error(417, f"cannot meet the expectation {expectation!r}", request=request)
            return
        host = request.headers.get("Host")
        server = self.context.server
        if not host_allowed(host, self._bound_host(), server.allowed_hosts):
            return  # answered 421 once the request is whole, as any other
        refusal = None if is_upgrade_request(request.headers) else server.http_server.refusal(request)
        if refusal is None:
            self.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self._keep_alive = False
            self._respond(request, refusal)

    def _send_error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None, request: Request | None = None) -> None:
        """Answer with an error (the application's error page, given the
        request when there is one) and close the connection."""
        self._keep_alive = False
        self._respond(None, self.context.server.http_server.error_response(status, message, headers or (), request=request))

    def _bound_host(self) -> str:
        local = self.context.server.get_local_ip()
        return local[0] if local is not None else ""

    def _respond(self, request: Request | None, response: Response) -> None:
        """Write ``response``: whole, or its head and as much of its streamed
        body as the socket takes now (the rest follows as it drains)."""
        plan = plan_response(response, request, self._keep_alive, tls=self.context.secure)
        self._keep_alive = plan.keep_alive
        self._framing = plan.framing
        self.stream.write(plan.head)
        body = response.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            if plan.framing is not BodyFraming.NONE:
                self.stream.write(body)
            self._response_done()
            return
        self._body = iter(body)
        if plan.framing is BodyFraming.NONE:
            self._release_body()
            self._response_done()
            return
        if isinstance(self._body, EventStream):
            self._body.attach(_EventStreamSink(self))
        self._pump_body()

    def _response_done(self) -> None:
        """The answer is written whole: close, or wait for the next request."""
        if not self._keep_alive or self.context.stopping:
            self.stream.close()
            return
        self._set_timer(self.context.server.keepalive_timeout)
        if not self._turn_pending:
            self.stream.resume_reading()

    # -- streamed bodies ---------------------------------------------------

    def _pump_body(self) -> bool:
        """Write streamed body chunks while the socket keeps up, until the
        poll step's budget is spent (one chunk at least); return whether the
        body is finished (the rest goes on at the next poll step, or when
        the socket drains)."""
        stream = self.stream
        reactor = self.reactor
        body = self._body
        pulled = False
        while body is not None and stream.buffered_amount <= stream.low_water and not stream.is_closing:
            if pulled and reactor.time() >= reactor.step_deadline:
                # The kernel keeps taking bytes (a fast reader of a big file):
                # yield the GUI thread, resume on the next step.
                if self._body_resume is None:
                    self._body_resume = reactor.call_later(0, self._resume_body)
                return False
            pulled = True
            try:
                chunk = next(body)
            except StopIteration:
                self._release_body()
                stream.write(end_of_body(self._framing))
                self._response_done()
                return True
            except Exception as exc:
                self.context.report_error(None, exc)
                self._release_body()
                stream.abort(exc)  # the answer is cut short: the client must not take it as whole
                return False
            if chunk is None:
                return False  # an event stream with nothing to send: it resumes the pump when it has
            stream.write(*frame_chunk(self._framing, chunk))
        return False

    def _resume_body(self) -> None:
        self._body_resume = None
        self._resume_body_now()

    def _resume_body_now(self) -> None:
        if self._body is not None and self._pump_body():
            self._serve_requests()

    def _event_stream_backed_up(self) -> None:
        grace = self.context.server.write_grace
        if grace is not None and self._grace_timer is None:
            self._grace_timer = self.reactor.call_later(grace, self._end_slow_stream, TimeoutError("client does not read its event stream"))

    def _end_slow_stream(self, error: Exception) -> None:
        """End the connection of an event stream whose client does not read
        (its grace expired, or an event would pass ``max_write_buffer``)."""
        self._grace_timer = None
        self.context.report_error(None, error)
        self.stream.abort(error)

    def _release_body(self) -> None:
        """Forget the streamed body, closing it (a file, an event stream) if it can be."""
        body, self._body = self._body, None
        if self._body_resume is not None:
            self._body_resume.cancel()
            self._body_resume = None
        close: Callable[[], object] | None = getattr(body, "close", None)
        if close is not None:
            self.context.invoke(close, None)

    # -- the upgrade -------------------------------------------------------

    def _upgrade(self, request: Request) -> None:
        context = self.context
        server = context.server
        if context.stopping:
            self._send_error(503, "server is stopping", request=request)
            return
        try:
            offer = parse_upgrade(request.method, request.version, request.headers)
            compression = server.compression
            agreement = None if compression is None else negotiate(compression, request.headers.get_all("Sec-WebSocket-Extensions"))
        except HandshakeError as exc:
            self._send_error(exc.status, exc.message, exc.headers, request=request)
            return
        if not origin_allowed(offer.origin, request.headers.get("Host"), server.http_server.scheme, server.origins):
            # Cross-site WebSocket hijacking: a foreign page's script.
            logger.warning("refused a WebSocket upgrade from origin %r (not the server's own; see origins)", offer.origin)
            self._send_error(403, f"origin {offer.origin!r} may not open a WebSocket here", request=request)
            return
        try:
            claim = ResumeClaim.of(context, request, offer.origin)
        except ValueError as exc:
            self._send_error(400, str(exc), request=request)
            return
        client = claim.session.client if claim is not None and claim.session is not None else context.new_client(request, self.stream.peer_address)
        response = UpgradeResponse()
        hook = server.on_upgrade_to_websocket
        if hook is not None:
            try:
                hook(client, request, response, offer.subprotocols, offer.origin)
            except Exception as exc:
                context.report_error(client, exc)
                response.error_status(500, "upgrade hook failed")
        subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        if not response.refused and subprotocol is not None and subprotocol not in offer.subprotocols:
            context.report_error(client, ValueError(f"subprotocol {subprotocol!r} was not offered by the client"))
            response.error_status(500, "server chose a subprotocol the client did not offer")
        if claim is not None and claim.session is not None and not claim.session.takes_messages and not response.refused:
            # The hook (or what it set off) ended the session: there is
            # nothing to resume. The page's next attempt is told so.
            response.error_status(409, "the session ended while its resume was being accepted; connect again")
        if response.refused:
            if claim is not None and claim.session is not None:
                # A revoked device, say: its session ends with the refusal.
                claim.session.start_close(CloseCode.POLICY_VIOLATION, "resume refused by on_upgrade_to_websocket")
            else:
                context.forget_client(client)
            if response.dropped:
                self.stream.close()
            else:
                self._send_error(response.refused_status or 403, response.refused_body, request=request)
            return
        extensions = None if agreement is None else agreement.response
        headers = accept_headers(offer.key, subprotocol, extensions)
        # The server alone answers for extensions: it is what speaks them.
        chosen = {name.lower() for name, _ in headers} | {"sec-websocket-extensions"}
        headers += [(n, v) for n, v in response.headers.raw_items() if n.lower() not in chosen]
        self.stream.write(render_head(101, headers))
        client.subprotocol = subprotocol
        client.extensions = extensions
        self._upgraded = True
        self._set_timer(None)
        deflate = None if agreement is None else PerMessageDeflate(agreement)
        if claim is None:
            driver = WebSocketDriver(context, self.stream, client, deflate)
            context.upgraded(self, driver, client, driver)
            driver.open(self.parser.take_buffered())
            return
        if claim.session is not None:
            # The page may be back from another address (a new network).
            client.request, client.remote_address = request, self.stream.peer_address
        session = claim.session or claim.new_session(client)
        driver = WebSocketDriver(context, self.stream, client, deflate, session)
        context.upgraded(self, driver, client, session)
        driver.open(self.parser.take_buffered(), claim.offer if claim.session is not None else None, claim.failure)


class _EventStreamSink:
    """The HTTP connection as the :class:`EventStream` it sends sees it."""

    def __init__(self, driver: HttpDriver) -> None:
        self._driver = driver
        self.write_limit = driver.context.server.write_limit
        self.max_buffer = driver.context.max_write_buffer

    @property
    def unsent(self) -> int:
        return self._driver.stream.buffered_amount

    def resume(self) -> None:
        self._driver._resume_body_now()

    def backed_up(self) -> None:
        self._driver._event_stream_backed_up()

    def overflow(self) -> None:
        self._driver._end_slow_stream(BufferError(f"client does not read its event stream ({self.unsent} bytes waiting)"))
