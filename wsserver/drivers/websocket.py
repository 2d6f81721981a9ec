"""The WebSocket driver: one connection after its upgrade.

It moves bytes between the socket (a :class:`~wsserver.reactor.Stream`) and
the sans-I/O :class:`~wsserver.protocol.Connection`, hands the application
each event as the protocol hands it out, and holds the connection's timers:
closing handshake, heartbeat, and the grace a client over its write limit
gets to catch up.

**Writing.** Nothing the application sends to an open connection is
refused or skipped: ``write_limit`` is a high-water mark. Crossing it makes
the client not :attr:`~WebSocketDriver.writable`, stops handing out (and
reading) its messages, whose answers and pongs would grow the backlog, and
starts ``write_grace``; draining to the low-water mark runs ``on_drain`` and
ends all three. Memory is bounded by closing, not dropping: a send that
would take the client past ``max_write_buffer``, or a grace that expires,
closes it with 1008.

**Reading.** Events are handed out one at a time, and a turn ends after
:data:`EVENTS_PER_TURN` of them or when the poll step's budget is spent:
the rest of what was read waits, the socket is not read meanwhile (TCP
backpressure on a client that floods), and the connection asks the reactor
for another turn behind the other ready connections. The optional rate
limit (``max_messages_per_second``, ``max_bytes_per_second``) pauses the
same way, until the client is back within its rate; nothing is dropped.
Inflating a large compressed message takes a turn per slice the same way.

**Compression.** A large message to send is compressed a slice per turn,
each once the socket has taken the slices before it, so that it is paced by
the network and never one long unit of work. zlib state a connection keeps
between messages is let go once it has been unused for the agreement's
``idle_timeout`` (checked at that interval: it goes after one to two).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..client import Client
from ..protocol import (
    CloseCode,
    CloseReceived,
    Connection,
    Failure,
    Fragment,
    Message,
    Opcode,
    PerMessageDeflate,
    PreparedMessage,
    ProtocolError,
    State,
    as_bytes,
)
from ..resume import ResumeError, keeps_session

if TYPE_CHECKING:
    from ..context import ServerContext
    from ..reactor import Stream, Timer
    from ..resume import ResumableSession, ResumeOffer

__all__ = ["WebSocketDriver"]

# The most a frame header adds to its payload, server side (no mask).
_MAX_HEADER = 10
#: Events one turn hands out at most; a connection with more in hand then
#: waits for its next turn, behind the other ready connections.
EVENTS_PER_TURN = 64
_OPEN = State.OPEN
_SLOW = "client does not read what it is sent"


class WebSocketDriver:
    """Drives one WebSocket connection; the :class:`Stream`'s handler after the upgrade."""

    #: Never: a connection that ends is closed (its session may be away; see :mod:`wsserver.resume`).
    is_away = False

    def __init__(
        self,
        context: ServerContext,
        stream: Stream,
        client: Client,
        deflate: PerMessageDeflate | None = None,
        session: ResumableSession | None = None,
    ) -> None:
        server = context.server
        self.context = context
        self.stream = stream
        self.client = client
        self.ws = Connection(
            server.max_message_size,
            deliver_fragments=server.on_fragment is not None,
            buffers=context.buffers,
            deflate=deflate,
        )
        self.max_write_buffer = context.max_write_buffer
        self.write_limit = server.write_limit
        self.opened = False  # on_open ran, so on_client_closed is owed (by the session, if resumable)
        #: The resumable session the connection carries, if any.
        self.session = session
        self._peer_silent = False  # dropped for not answering the heartbeat
        self.last_seen = context.reactor.time()
        self._ping_sent_at: float | None = None
        self._over_high_water = False
        self._turn_pending = False  # input in hand waits for the next turn
        self._rate = _RateLimit.for_server(context) if server.max_messages_per_second or server.max_bytes_per_second else None
        self._rate_timer: Timer | None = None  # runs while the client is over its rate
        self._close_timer: Timer | None = None
        self._heartbeat_timer: Timer | None = None
        self._grace_timer: Timer | None = None  # runs while the client is over its write_limit
        self._deflate_timer: Timer | None = None  # runs while zlib state is kept between messages
        # on_drain must follow every crossing of write_limit: that needs the
        # low-water mark below it, whatever the reactor's write slice.
        stream.low_water = min(stream.low_water, server.write_limit // 2)
        stream.handler = self
        if session is None:
            client.attach_state(self)

    def open(self, leftover: bytes, resume: ResumeOffer | None = None, resume_failed: str | None = None) -> None:
        """The 101 answer is written: run ``on_open`` (or resume the
        session the offer names), then take any input that came with the upgrade."""
        context = self.context
        client = self.client
        server = context.server
        session = self.session
        self.opened = True
        self._arm_heartbeat()
        if session is not None and resume is not None:
            session.resume(self, resume)
        else:
            if session is not None:
                session.start(self, resume_failed)
                if resume_failed is not None:
                    context.invoke(server.on_resume_failed, client, client, resume_failed)
            context.notify("open", client)
            context.invoke(server.on_open, client, client)
        if leftover and not self.stream.is_closing:
            self.data_received(memoryview(leftover))

    # -- the client's state ------------------------------------------------

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for the client: in the socket's buffer, and held
        behind a fragmented message being sent."""
        return self.stream.buffered_amount + self.ws.held_size

    @property
    def writable(self) -> bool:
        return self.is_open and not self._over_high_water

    @property
    def is_open(self) -> bool:
        return self.ws.can_send and not self.stream.is_closing

    @property
    def is_closed(self) -> bool:
        return self.stream.closed

    @property
    def takes_messages(self) -> bool:
        return self.is_open

    # -- input -------------------------------------------------------------

    def data_received(self, data: memoryview) -> None:
        self.last_seen = self.context.reactor.time()
        self.ws.receive_data(data)
        self._handle_events()

    def turn(self) -> None:
        self._turn_pending = False
        if self.ws.compressing:
            self._compress_more()
        if self.session is not None and self.session.replaying:
            self.session.replay_more()
        self._handle_events()

    def _handle_events(self) -> None:
        """Hand the application each event in turn: what it sends for one
        goes out before the protocol parses the frames behind it. Stops
        after a turn's worth, or while the client is over its write limit
        or its rate (what it sent waits, parsed no further)."""
        ws = self.ws
        context = self.context
        server = context.server
        client = self.client
        reactor = context.reactor
        translate = server.translate_message
        rate = self._rate
        session = self.session
        left = EVENTS_PER_TURN
        while not self._over_high_water and self._rate_timer is None:
            if left < EVENTS_PER_TURN and (not left or reactor.time() >= reactor.step_deadline):
                if ws.buffered_input or ws.work_pending:
                    self._turn_pending = True
                    self.stream.request_turn()
                break
            event = ws.next_event()
            left -= 1
            if event is None:
                if ws.work_pending:
                    continue  # a slice of inflating was done: another, if the budget allows
                break
            if type(event) is Message:
                if rate is not None:
                    self._take_rate(rate, len(event.data))
                if context.stopping:
                    continue
                if session is not None:
                    try:
                        event = session.receive(event)
                    except ResumeError as exc:
                        self.close_for_policy(str(exc), exc)
                        continue
                    if event is None:
                        continue  # the session's own control message
                if translate is not None and context.invoke(translate, client, client, event):
                    continue
                context.invoke(server.on_message, client, client, event)
            elif type(event) is Fragment:
                if rate is not None:
                    self._take_rate(rate, len(event.data))
                if not context.stopping:
                    context.invoke(server.on_fragment, client, client, event)
            else:
                self._flush()  # the protocol's own answer (a pong, a Close) goes first
                if isinstance(event, CloseReceived):
                    context.invoke(server.on_close, client, client, event.code, event.reason)
                    if ws.state is State.CLOSING:
                        # The answering Close waits behind a message still
                        # being compressed: the client has close_timeout to take it.
                        self._arm_close_timer()
                elif isinstance(event, Failure):
                    context.report_error(client, ProtocolError(event.reason, event.code))
            if self.stream.closed:
                return  # a callback stopped the server or dropped us: on_client_closed already ran
        if ws.state is State.CLOSED:
            # The closing handshake is over (or the connection failed): the
            # server closes TCP first (RFC 6455 section 7.1.1), once what is
            # queued (replies, then the Close frame) is sent.
            self._close_stream()
        else:
            self._update_reading()
            if ws.deflate is not None:
                self._watch_deflate_state(ws.deflate)

    def _update_reading(self) -> None:
        """Read the socket only while nothing holds the client's input back."""
        if self._over_high_water or self._turn_pending or self._rate_timer is not None:
            self.stream.pause_reading()
        else:
            self.stream.resume_reading()

    def _take_rate(self, rate: _RateLimit, size: int) -> None:
        wait = rate.take(self.context.reactor.time(), size)
        if wait > 0:
            self._rate_timer = self.context.reactor.call_later(wait, self._rate_regained)

    def _rate_regained(self) -> None:
        self._rate_timer = None
        self._handle_events()

    def eof_received(self) -> bool:
        return False

    def write_drained(self) -> None:
        # It caught up: the grace period is over, and it is heard again.
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        resumed = self._over_high_water and self.stream.buffered_amount < self.write_limit and not self.stream.is_closing
        if resumed:
            self._over_high_water = False
        if self.opened:
            self.context.invoke(self.context.server.on_drain, self.client, self.client)
        if resumed and not self.stream.is_closing:
            self._handle_events()  # what it sent meanwhile, still unparsed; reading resumes
        if self.ws.compressing:
            self._compress_more()
        if self.session is not None and self.session.replaying:
            self.session.replay_more()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._close_timer, self._heartbeat_timer, self._grace_timer, self._rate_timer, self._deflate_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._heartbeat_timer = self._grace_timer = self._rate_timer = self._deflate_timer = None
        if self.ws.deflate is not None:
            self.ws.deflate.release()
        context = self.context
        client = self.client
        session = self.session
        if session is not None and session.driver is not self:
            context.connection_lost(self)  # its session went on on a newer connection
            return
        ws = self.ws
        # A Close frame of ours that was never answered is no closing
        # handshake (1006); one that failed the connection tells why it ended.
        closed = ws.close_received or (ws.close_sent if ws.state is State.CLOSED else None)
        code, reason = closed if closed else (CloseCode.ABNORMAL, "")
        if session is not None:
            # Gone without meaning to end the session: kept for a resume.
            vanished = keeps_session(code, ws.close_received is not None, self._peer_silent)
            if self.opened and vanished and session.went_away(self, (client.close_code or code, client.close_reason or reason)):
                client.close_code, client.close_reason = None, ""
                context.connection_lost(self)
                return
            session.end()
        opened, self.opened = self.opened, False
        context.client_ended(client, code, reason, opened)
        context.connection_lost(self)  # last: it may end a stop, after on_client_closed

    # -- output ------------------------------------------------------------

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Queue a message; False if the connection no longer takes any
        (closing, closed, or closed now for going past ``max_write_buffer``)."""
        ws = self.ws
        if ws.state is not _OPEN or self.stream.is_closing:
            return False
        if self.stream.buffered_amount + ws.held_size + message.size > self.max_write_buffer:
            self._overflow()
            return False
        ws.send_prepared(message)
        self._sent()
        return True

    def send_frame(self, opcode: int, payload: bytes, fin: bool, rsv1: bool, rsv2: bool, rsv3: bool) -> bool:
        """Queue one raw frame (see :meth:`Connection.send_frame`)."""
        if not self.is_open:
            return False
        if self.buffered_amount + len(payload) + _MAX_HEADER > self.max_write_buffer:
            self._overflow()
            return False
        self.ws.send_frame(opcode, payload, fin, rsv1, rsv2, rsv3)
        self._sent()
        if self.ws.state is State.CLOSING:
            self._arm_close_timer()  # the application sent a Close frame itself
        return True

    def _sent(self) -> None:
        """After the application sent something: move it to the socket, and
        have compression go on (a message sent, or released from behind a
        fragmented one, may have started a large compressed one)."""
        self._flush()
        ws = self.ws
        if ws.deflate is not None:
            if ws.compressing:
                self.stream.request_turn()  # the next slice, in a later turn
            self._watch_deflate_state(ws.deflate)

    def _compress_more(self) -> None:
        """Compress the next slice of the large message being sent, once the
        socket has taken the slices before it (else ``write_drained`` comes
        back here), and ask for a turn for the one after. A Close frame
        that waited for the message goes out after it."""
        stream = self.stream
        if stream.buffered_amount > stream.low_water or stream.is_closing:
            return
        ws = self.ws
        ws.send_more()
        self._flush()
        if ws.state is State.CLOSED:
            self._close_stream()  # the Close frame that waited answered the client's
        elif ws.compressing and stream.buffered_amount <= stream.low_water:
            stream.request_turn()

    def _watch_deflate_state(self, deflate: PerMessageDeflate) -> None:
        """Have zlib state that outlives a message checked for idleness."""
        timeout = deflate.agreement.compression.idle_timeout
        if self._deflate_timer is None and timeout is not None and deflate.holds_state:
            deflate.used = False
            self._deflate_timer = self.context.reactor.call_later(timeout, self._deflate_idle_check, deflate, timeout)

    def _deflate_idle_check(self, deflate: PerMessageDeflate, timeout: float) -> None:
        """Let zlib state go if it was not used since the last check."""
        if deflate.used:
            deflate.used = False
            self._deflate_timer = self.context.reactor.call_later(timeout, self._deflate_idle_check, deflate, timeout)
        else:
            self._deflate_timer = None
            self.ws.release_idle_state()

    def start_close(self, code: int, reason: str) -> None:
        """Send a Close frame and wait (at most ``close_timeout``) for the peer's."""
        if not self.ws.can_send:
            return
        self.ws.send_close(code, reason)
        self._flush()
        self._arm_close_timer()

    def shutdown(self) -> None:
        self.start_close(CloseCode.GOING_AWAY, "server stopping")

    def _overflow(self) -> None:
        """A message would take the client past ``max_write_buffer``: it is
        closed with 1008 instead (nothing is dropped silently)."""
        self.close_for_policy(_SLOW, BufferError(f"client does not read what it is sent ({self.buffered_amount} bytes waiting)"))

    def _flush(self) -> None:
        """Move what the protocol queued to the socket; watch the high-water mark."""
        out = self.ws.data_to_send()
        if not out:
            return
        stream = self.stream
        stream.write(*out)
        if stream.buffered_amount >= self.write_limit and not self._over_high_water and self.opened:
            self._over_high_water = True
            # A client that does not read what it is sent is not read either
            # until it catches up: its input makes output (pongs at least).
            self.stream.pause_reading()
            grace = self.context.server.write_grace
            if grace is not None and self.ws.can_send:
                self._grace_timer = self.context.reactor.call_later(grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if self.is_open:
            self.close_for_policy(_SLOW, TimeoutError(_SLOW))

    def close_for_policy(self, reason: str, error: Exception) -> None:
        """Close with 1008 and ``reason``, and report ``error``; the Close
        frame waits behind the backlog, so ``close_timeout`` drops TCP if
        the client still does not read."""
        if self.session is not None:
            self.session.ending = True
        self.client.close_code, self.client.close_reason = CloseCode.POLICY_VIOLATION, reason
        self.context.report_error(self.client, error)
        self.start_close(CloseCode.POLICY_VIOLATION, reason)

    def _close_stream(self) -> None:
        self.stream.close()
        if not self.stream.closed:
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = self.context.reactor.call_later(self.context.server.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.stream.abort(TimeoutError("closing handshake timed out"))

    # -- heartbeat ---------------------------------------------------------

    def _arm_heartbeat(self, when: float | None = None) -> None:
        interval = self.context.server.heartbeat_interval
        if interval is None or interval <= 0:
            return
        if when is None:
            when = self.last_seen + interval
        self._heartbeat_timer = self.context.reactor.call_at(when, self._heartbeat)

    def _heartbeat(self) -> None:
        """Ping a client that has been quiet for ``heartbeat_interval``, and
        drop one that then stays silent for ``heartbeat_timeout``."""
        self._heartbeat_timer = None
        if not self.is_open:
            return
        server = self.context.server
        now = self.context.reactor.time()
        interval = server.heartbeat_interval or 0.0
        timeout = server.heartbeat_timeout
        if self._ping_sent_at is not None:
            if self.last_seen >= self._ping_sent_at:
                self._ping_sent_at = None
            elif timeout is not None and now >= self._ping_sent_at + timeout:
                self._peer_silent = True
                self._fail(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                return
            else:
                self._arm_heartbeat(self._ping_sent_at + (timeout or interval))
                return
        due = self.last_seen + interval
        if now < due:
            self._arm_heartbeat(due)
            return
        self.ws.send_frame(server.heartbeat_type, as_bytes(server.heartbeat_data))
        self._flush()
        if server.heartbeat_type == Opcode.PING and timeout is not None and timeout > 0:
            self._ping_sent_at = now
            self._arm_heartbeat(now + min(timeout, interval))
        else:
            self._arm_heartbeat(now + interval)

    def _fail(self, code: int, reason: str) -> None:
        """Give up on a peer that does not answer: send a Close frame and drop TCP at once."""
        self.ws.fail(code, reason)
        self._flush()
        self.client.close_code, self.client.close_reason = code, reason
        self.context.report_error(self.client, TimeoutError(reason))
        self.stream.abort(TimeoutError(reason))


class _RateLimit:
    """Two token buckets, messages and bytes, each holding one second's
    worth; a message is always taken, and the debt it leaves is waited off."""

    __slots__ = ("messages_per_s", "bytes_per_s", "messages", "bytes", "at")

    def __init__(self, messages_per_s: float | None, bytes_per_s: float | None, now: float) -> None:
        self.messages_per_s = messages_per_s
        self.bytes_per_s = bytes_per_s
        self.messages = messages_per_s or 0.0
        self.bytes = bytes_per_s or 0.0
        self.at = now

    @classmethod
    def for_server(cls, context: ServerContext) -> _RateLimit:
        server = context.server
        return cls(server.max_messages_per_second, server.max_bytes_per_second, context.reactor.time())

    def take(self, now: float, size: int) -> float:
        """Account for one message of ``size``; return how long to wait
        before the next one (0 when within the rate)."""
        elapsed, self.at = now - self.at, now
        wait = 0.0
        if self.messages_per_s:
            self.messages = min(self.messages_per_s, self.messages + elapsed * self.messages_per_s) - 1
            if self.messages < 0:
                wait = -self.messages / self.messages_per_s
        if self.bytes_per_s:
            self.bytes = min(self.bytes_per_s, self.bytes + elapsed * self.bytes_per_s) - size
            if self.bytes < 0:
                wait = max(wait, -self.bytes / self.bytes_per_s)
        return wait
