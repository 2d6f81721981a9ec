"""Session resume: a page whose connection drops (a phone that sleeps, a
laptop that closes its lid, Wi-Fi that changes) comes back within a while
and gets every message it missed, and sends every one the server missed,
each exactly once and in order.

Opt in per server with ``Server(resume=ResumePolicy(...))``; a client then
asks for it per connection with the query parameter ``wsserver-resume``
(``/wsserver-rpc.js`` does, with ``WsRpc.connect(url, {resume: true})``).
Clients that do not ask are plain WebSocket clients, as on any server.

**While the page is away** its :class:`~wsserver.client.Client` lives on:
the same handle and ``id``, ``send()`` and ``publish()`` queue into its
replay buffer, and ``on_client_closed`` waits. A resume runs
``on_resumed(client)`` instead of ``on_open``. The session ends, and
``on_client_closed`` runs once, when the page closes it (Close 1000), the
server does (``close()``, ``stop()``, a protocol error, a client that does
not read), it stays away longer than ``away_timeout``, or its replay buffer
would pass ``max_messages`` or ``max_bytes``. A page that comes back after
that, or with a gap either side no longer holds, gets a new session, and
both sides are told: ``on_resume_failed(client, reason)`` on the server,
before ``on_open``, and the page's own event.

A session goes away, instead of ending, when its connection ends without a
closing handshake (1006), by the heartbeat's timeout, by the page's Close
1001 (Going Away: a page the browser put in its back-forward cache sends
it, and may come back), or by the page's Close 4001
(:data:`CLOSE_TO_RESUME`: it gives up a connection it found dead, and
resumes on another). ``on_close`` runs for those Close frames all the same.

**The resume token** (128 random bits) is sent to the page over its own
connection. A resume must come from the same ``Origin`` and with the same
signed session (``http_server.sessions``) as the connect that made the
token, and it passes ``on_upgrade_to_websocket`` again (a revoked device is
refused there, and its session ends).

**Wire format**, on a resumable connection only. Every message starts with
one character: ``.`` (the byte 0x2E before binary) before an application
message, ``!`` before a control message, a JSON object with a ``type``:

* ``session`` (server to page): a new session, with its ``token``, how
  often to acknowledge (``ackEvery`` messages), and ``resumeFailed``, the
  reason, when the page asked to resume and could not;
* ``resumed`` (server to page): the session is back; the server had
  ``received`` of the page's messages, and its own missed ones follow;
* ``ack`` (both ways): ``received`` messages have arrived; the other side
  lets its copies go.

Numbering is implicit: a connection keeps order, so the n-th application
message either side sends in the session is number n. A page asks to resume
with ``wsserver-resume=<token>``, ``wsserver-received=<r>`` (how many of the
server's it has) and ``wsserver-first=<f>`` (the number of the oldest of
its own it still holds); ``wsserver-resume=new`` starts a session.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .protocol import CloseCode, Message, Opcode, PreparedMessage, prepare_message

if TYPE_CHECKING:
    from .client import Client
    from .context import ServerContext
    from .drivers.websocket import WebSocketDriver
    from .http.request import Request
    from .reactor import Timer

__all__ = ["ResumePolicy", "ResumableSession", "ResumeOffer", "ResumeClaim", "ResumeError", "QUERY_TOKEN", "CLOSE_TO_RESUME", "keeps_session"]

#: The query parameters of a connect that asks for a resumable session.
QUERY_TOKEN = "wsserver-resume"
QUERY_RECEIVED = "wsserver-received"
QUERY_FIRST = "wsserver-first"
#: The prefixes that tell an application message from a control message.
DATA_PREFIX = "."
CONTROL_PREFIX = "!"
_DATA_BYTE = b"."
#: Seconds after a message arrives within which it is acknowledged, when
#: ``ack_every`` messages have not come first.
ACK_DELAY = 0.25
#: Kept messages one turn sends again at most, after a resume.
REPLAY_PER_TURN = 64
#: The Close code of a page that gives up a connection to resume its
#: session on another (a private-use code, RFC 6455 section 7.4.2).
CLOSE_TO_RESUME = 4001
#: The longest control message: they are small JSON objects.
MAX_CONTROL = 256


def keeps_session(code: int, from_page: bool, peer_silent: bool) -> bool:
    """Whether a connection that ended with ``code`` leaves its session
    away rather than ending it: it ended without a closing handshake, the
    page went silent, or the page's Close said it may come back."""
    return code == CloseCode.ABNORMAL or peer_silent or (from_page and code in (CloseCode.GOING_AWAY, CLOSE_TO_RESUME))


class ResumeError(Exception):
    """A resumable connection broke the resume protocol (closed with 1008)."""


@dataclass(frozen=True)
class ResumePolicy:
    """How much of a session is kept for a page that is away.

    :param max_messages: messages the server keeps that the page has not
        acknowledged: sent while it was away, or not acknowledged yet while
        it is connected (the page acknowledges every ``max_messages / 4``
        messages or 250 ms, so a burst of more than ``max_messages``
        within a round trip passes the limit too).
    :param max_bytes: the same, in frame bytes; a message larger than this
        ends its session at once. The default is ``write_limit``'s. A
        message is shared between the sessions it was published to: this
        bounds what one session holds on to, not always what it alone
        costs.
    :param away_timeout: seconds a session may stay away before it ends.
    :param max_away: sessions kept away at once; a connection that drops
        when that many are away ends its session, as without resume. With
        ``max_bytes``, it bounds what away sessions hold in all (and what
        a peer that connects and vanishes over and over can make the
        server keep).

    Going past either buffer limit ends the session (``on_client_closed``,
    close code 1008) rather than forgetting a message: a page that comes
    back then is told its resume failed.
    """

    max_messages: int = 4096
    max_bytes: int = 4 * 1024 * 1024
    away_timeout: float = 60.0
    max_away: int = 1024

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.max_bytes < 1 or not self.away_timeout > 0 or self.max_away < 0:
            raise ValueError("a ResumePolicy keeps at least one message and byte, for a positive away_timeout, and max_away is not negative")

    @property
    def ack_every(self) -> int:
        """How many messages the page receives before it acknowledges them:
        a quarter of ``max_messages``, so that a page keeping up never
        comes near the limit."""
        return max(1, self.max_messages // 4)


@dataclass(frozen=True)
class ResumeOffer:
    """What a connect asks for: a new session (``token`` None), or to resume one."""

    token: str | None
    received: int = 0
    first: int = 1

    @classmethod
    def from_request(cls, request: Request) -> ResumeOffer | None:
        """The offer in the request's query; None if it asks for none.
        Raises ``ValueError`` for one that is malformed."""
        token = request.query.get(QUERY_TOKEN)
        if token is None:
            return None
        if token == "new":
            return cls(None)
        try:
            received, first = int(request.query[QUERY_RECEIVED]), int(request.query[QUERY_FIRST])
        except (KeyError, ValueError):
            raise ValueError(f"a resume names its token, {QUERY_RECEIVED} and {QUERY_FIRST}") from None
        if received < 0 or first < 1 or not token:
            raise ValueError("a resume's counts are not negative and its first message is 1 or later")
        return cls(token, received, first)


def _binding(request: Request, origin: str | None, context: ServerContext) -> tuple[str | None, Any]:
    """What a resume must bring again: the page's origin, and its signed session's values."""
    sessions = context.server.http_server.sessions
    return origin, (None if sessions is None else dict(sessions.load(request)))


class ResumeClaim:
    """What one upgrade request asks of session resume, checked against
    the server's sessions: the session it resumes, or why it cannot."""

    __slots__ = ("context", "offer", "binding", "session", "failure")

    def __init__(self, context: ServerContext, offer: ResumeOffer, binding: tuple[str | None, Any]) -> None:
        self.context = context
        self.offer = offer
        self.binding = binding
        #: The session to resume; None for a new one.
        self.session: ResumableSession | None = None
        #: Why the resume asked for cannot be (None when it can, or none was asked).
        self.failure: str | None = None
        if offer.token is None:
            return
        found = context.sessions.get(offer.token)
        if found is None:
            self.failure = "the session is unknown or has ended"
            return
        self.failure = found.check(offer, binding)
        if self.failure is None:
            self.session = found
        elif binding == found.binding:
            # The page's own session, past saving: it ends now (another
            # page's attempt changes nothing).
            found.start_close(CloseCode.POLICY_VIOLATION, f"resume failed: {self.failure}")

    @classmethod
    def of(cls, context: ServerContext, request: Request, origin: str | None) -> ResumeClaim | None:
        """The claim of ``request``; None if the server or the request does
        not do resume. Raises ``ValueError`` for a malformed offer."""
        if context.server.resume is None:
            return None
        offer = ResumeOffer.from_request(request)
        return None if offer is None else cls(context, offer, _binding(request, origin, context))

    def new_session(self, client: Client) -> ResumableSession:
        policy = self.context.server.resume
        assert policy is not None
        return ResumableSession(self.context, client, policy, self.binding)


def _control(**fields: Any) -> PreparedMessage:
    return prepare_message(CONTROL_PREFIX + json.dumps(fields, separators=(",", ":")))


class ResumableSession:
    """The server's side of one resumable session.

    It is its client's state (:class:`~wsserver.client.ClientState`) from
    the upgrade until the session ends, across drops: it numbers and keeps
    what is sent until the page acknowledges it, forwards to the
    connection's driver while there is one, and counts what arrives.
    """

    def __init__(self, context: ServerContext, client: Client, policy: ResumePolicy, binding: tuple[str | None, Any]) -> None:
        self.context = context
        self.client = client
        self.policy = policy
        self.binding = binding
        self.token = secrets.token_urlsafe(16)
        #: The connection's driver; None while the page is away.
        self.driver: WebSocketDriver | None = None
        #: Application messages sent (numbered 1 to ``sent``) and received.
        self.sent = 0
        self.received = 0
        #: The sent messages the page has not acknowledged, oldest first.
        self.replay: deque[PreparedMessage] = deque()
        self.replay_bytes = 0
        #: The server ends it: no drop leaves it away any more.
        self.ending = False
        self.ended = False
        self._acknowledged = 0  # how many received we last acknowledged
        self._next = 1  # the number of the next message to hand to the driver
        self._ack_timer: Timer | None = None
        self._away_timer: Timer | None = None
        self._away_status: tuple[int, str] = (CloseCode.ABNORMAL, "")
        context.sessions[self.token] = self
        client.attach_state(self)

    # -- the client's state ------------------------------------------------

    @property
    def buffered_amount(self) -> int:
        """The connection's unsent bytes; while away, the replay buffer's."""
        return self.replay_bytes if self.driver is None else self.driver.buffered_amount

    @property
    def writable(self) -> bool:
        return self.driver is not None and self.driver.writable

    @property
    def is_open(self) -> bool:
        return self.driver is not None and self.driver.is_open

    @property
    def is_closed(self) -> bool:
        return self.ended

    @property
    def is_away(self) -> bool:
        return self.driver is None and not self.ended

    @property
    def takes_messages(self) -> bool:
        return not self.ending and not self.ended

    @property
    def first_held(self) -> int:
        """The number of the oldest message kept for replay (``sent + 1`` if none)."""
        return self.sent - len(self.replay) + 1

    def send_prepared(self, message: PreparedMessage) -> bool:
        """Number and keep ``message``, and send it if connected. False if
        the session no longer takes messages, or ends now because keeping
        this one would pass the policy's limits."""
        if not self.takes_messages:
            return False
        numbered = message.with_prefix(_DATA_BYTE)
        policy = self.policy
        if len(self.replay) >= policy.max_messages or self.replay_bytes + numbered.size > policy.max_bytes:
            self._overflow()
            return False
        self.sent += 1
        self.replay.append(numbered)
        self.replay_bytes += numbered.size
        driver = self.driver
        if driver is not None and self._next == self.sent:
            # Not behind a replay: straight on. (False means this connection
            # is going, and it is replayed on the next, or the client does
            # not read and is being closed.)
            self._next += 1
            driver.send_prepared(numbered)
        return self.takes_messages

    def send_frame(self, opcode: int, payload: bytes, fin: bool, rsv1: bool, rsv2: bool, rsv3: bool) -> bool:
        """Raw control frames pass through; data frames would not be numbered."""
        if opcode < Opcode.CLOSE:
            raise ValueError("send_data() cannot send data frames on a resumable session: they would not be numbered or replayed; use send()")
        if opcode == Opcode.CLOSE:
            self.ending = True
        return self.driver is not None and self.driver.send_frame(opcode, payload, fin, rsv1, rsv2, rsv3)

    def start_close(self, code: int, reason: str) -> None:
        """End the session: by a closing handshake when connected, at once when away."""
        self.ending = True
        if self.driver is not None:
            self.driver.start_close(code, reason)
        else:
            self.expire(code, reason)

    # -- input -------------------------------------------------------------

    def receive(self, message: Message) -> Message | None:
        """The application message inside ``message``, numbered; None for a
        control message (handled here). Raises :class:`ResumeError`."""
        data = message.data
        if isinstance(data, str) and data[:1] == CONTROL_PREFIX:
            self._control(data[1:])
            return None
        if data[:1] != (DATA_PREFIX if isinstance(data, str) else _DATA_BYTE):
            raise ResumeError("a message on a resumable connection starts with '.' or '!'")
        self.received += 1
        if self.received - self._acknowledged >= self.policy.ack_every:
            self._acknowledge()
        elif self._ack_timer is None:
            self._ack_timer = self.context.reactor.call_later(ACK_DELAY, self._acknowledge)
        return Message(message.type, data[1:])

    def _control(self, text: str) -> None:
        if len(text) > MAX_CONTROL:
            raise ResumeError(f"a control message is at most {MAX_CONTROL} characters")
        try:
            fields = json.loads(text)
            kind, received = fields["type"], fields["received"]
        except (ValueError, TypeError, KeyError):
            raise ResumeError("a control message is a JSON object with a type") from None
        if kind != "ack" or type(received) is not int:
            raise ResumeError(f"unknown control message {kind!r}")
        if not self.first_held - 1 <= received < self._next:
            raise ResumeError(f"the page acknowledges {received} messages; {self.first_held - 1} to {self._next - 1} were sent and unacknowledged")
        self._release(received)

    def _release(self, received: int) -> None:
        """Let go of the messages the page has (numbers up to ``received``)."""
        replay = self.replay
        for _ in range(received - self.first_held + 1):
            self.replay_bytes -= replay.popleft().size

    def _acknowledge(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.driver is not None and self._acknowledged != self.received:
            self._acknowledged = self.received
            self.driver.send_prepared(_control(type="ack", received=self.received))

    # -- connections -------------------------------------------------------

    def check(self, offer: ResumeOffer, binding: tuple[str | None, Any]) -> str | None:
        """Why ``offer`` cannot resume this session (None if it can)."""
        if binding != self.binding:
            return "the session belongs to another page"
        if self.ending:
            return "the server is ending the session"
        if offer.received > self.sent:
            return f"the page counts {offer.received} messages from the server, which sent {self.sent}"
        if offer.received + 1 < self.first_held:
            return f"messages {offer.received + 1} to {self.first_held - 1} the page missed are no longer held"
        if offer.first > self.received + 1:
            return f"the page no longer holds its messages {self.received + 1} to {offer.first - 1}"
        return None

    def start(self, driver: WebSocketDriver, failure: str | None) -> None:
        """The session's first connection is open: tell the page its token."""
        self.driver = driver
        self._next = self.sent + 1
        hello = {"type": "session", "token": self.token, "ackEvery": self.policy.ack_every}
        if failure is not None:
            hello["resumeFailed"] = failure
        driver.send_prepared(_control(**hello))

    def resume(self, driver: WebSocketDriver, offer: ResumeOffer) -> None:
        """The page is back on ``driver``: say how many of its messages
        arrived, start sending what it missed, and run ``on_resumed``. A
        connection the server still held for it (the drop went unnoticed)
        is dropped."""
        old, self.driver = self.driver, driver
        self.context.away.discard(self)
        if old is not None:
            old.stream.abort(ConnectionResetError("the page resumed its session on a new connection"))
        if self._away_timer is not None:
            self._away_timer.cancel()
            self._away_timer = None
        client = self.client
        client.close_code, client.close_reason = None, ""
        self._release(offer.received)
        self._acknowledged = self.received
        driver.send_prepared(_control(type="resumed", received=self.received))
        self._next = offer.received + 1
        self.replay_more()
        self.context.invoke(self.context.server.on_resumed, client, client)

    @property
    def replaying(self) -> bool:
        """Whether kept messages wait to be sent again (new ones queue behind them)."""
        return self._next <= self.sent

    def replay_more(self) -> None:
        """Hand the driver the next kept messages: a turn's worth, within the
        poll step's budget and while the client is writable. The driver
        calls again on its next turn, or once the client has drained."""
        driver = self.driver
        if driver is None:
            return
        reactor = self.context.reactor
        replay = self.replay
        count = 0
        while self._next <= self.sent and driver.writable:
            if count and (count >= REPLAY_PER_TURN or reactor.time() >= reactor.step_deadline):
                driver.stream.request_turn()
                return
            driver.send_prepared(replay[self._next - self.first_held])
            self._next += 1
            count += 1

    def went_away(self, driver: WebSocketDriver, status: tuple[int, str]) -> bool:
        """``driver``'s connection ended with ``status``: keep the session
        for a resume (True) unless the server is ending it."""
        context = self.context
        if self.ending or context.stopping or len(context.away) >= self.policy.max_away:
            return False
        context.away.add(self)
        self.driver = None
        self._away_status = status
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._away_timer = self.context.reactor.call_later(self.policy.away_timeout, self._away_too_long)
        return True

    def _away_too_long(self) -> None:
        self._away_timer = None
        code, _ = self._away_status
        self.expire(code, f"away for longer than {self.policy.away_timeout:g} s")

    def _overflow(self) -> None:
        reason = "replay buffer full"
        error = BufferError(f"{reason}: {len(self.replay)} messages, {self.replay_bytes} bytes not acknowledged")
        self.ending = True
        if self.driver is not None:
            self.driver.close_for_policy(reason, error)
        else:
            self.context.report_error(self.client, error)
            self.expire(CloseCode.POLICY_VIOLATION, reason + " while away")

    # -- the end -----------------------------------------------------------

    def end(self) -> None:
        """Forget the session: its token, its timers and its buffer."""
        self.ending = self.ended = True
        self.driver = None
        self.context.sessions.pop(self.token, None)
        self.context.away.discard(self)
        for timer in (self._ack_timer, self._away_timer):
            if timer is not None:
                timer.cancel()
        self._ack_timer = self._away_timer = None
        self.replay.clear()
        self.replay_bytes = 0

    def expire(self, code: int, reason: str) -> None:
        """End a session that is away: ``on_client_closed`` runs now."""
        if self.ended:
            return
        self.end()
        self.context.client_ended(self.client, code, reason, opened=True)
