"""JSON-RPC 2.0 over the server's WebSocket connections: :class:`JsonRpc`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..http.request import Request
from ..http.response import Response
from ..protocol import Message
from .deferred import Deferred
from .methods import Method, MethodTable
from .protocol import (
    CALL_TIMED_OUT,
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    TOO_MANY_PENDING,
    Answer,
    Call,
    Invalid,
    RpcError,
    call_message,
    encode,
    error_message,
    parse,
    result_message,
)

if TYPE_CHECKING:
    from ..reactor import Timer
    from ..server import Client, Server

__all__ = ["JsonRpc", "CLIENT_SCRIPT_PATH", "CLIENT_TYPES_PATH", "DEFAULT_CALL_TIMEOUT"]

#: Where the HTTP side serves the JavaScript client, and its TypeScript declarations.
CLIENT_SCRIPT_PATH = "/wsserver-rpc.js"
CLIENT_TYPES_PATH = "/wsserver-rpc.d.ts"
#: Seconds a call into a page waits for its answer unless told otherwise.
DEFAULT_CALL_TIMEOUT = 30.0
#: Methods of the service itself, under the prefix the specification keeps
#: for "rpc-internal methods and extensions" (section 4), so that no
#: application method can take their names. ``rpc.ping`` lets a page tell a
#: live connection from one that died unnoticed (a phone that slept).
_INTERNAL_METHODS: dict[str, Method] = {"rpc.ping": Method.of("rpc.ping", lambda: None)}

ResultCallback = Callable[[Any], Any]
ErrorCallback = Callable[[RpcError], Any]


class _Reply:
    """The answers to one message: one call's, or a batch's, sent as one
    array once its last deferred result is in (section 6)."""

    __slots__ = ("batch", "parts", "missing")

    def __init__(self, batch: bool, size: int) -> None:
        self.batch = batch
        self.parts: list[str | None] = [None] * size
        self.missing = size

    def fill(self, index: int, text: str | None) -> str | None:
        """Record entry ``index``'s answer (None: it has none); the text to
        send once every entry has one, else None."""
        self.parts[index] = text
        self.missing -= 1
        if self.missing:
            return None
        parts = [part for part in self.parts if part is not None]
        if not parts:
            return None  # only notifications: nothing is sent back
        return "[" + ",".join(parts) + "]" if self.batch else parts[0]


class _PendingCall:
    """One of our calls into a page, waiting for its answer."""

    __slots__ = ("on_result", "on_error", "timer")

    def __init__(self, on_result: ResultCallback | None, on_error: ErrorCallback | None) -> None:
        self.on_result = on_result
        self.on_error = on_error
        self.timer: Timer | None = None


class _Peer:
    """What the service keeps for one RPC connection."""

    __slots__ = ("client", "calls", "waiting", "last_id")

    def __init__(self, client: Client) -> None:
        self.client = client
        #: Our calls into it, by id.
        self.calls: dict[int, _PendingCall] = {}
        #: Its calls whose methods returned a Deferred not yet settled.
        self.waiting: set[Deferred] = set()
        self.last_id = 0


class JsonRpc:
    """A JSON-RPC 2.0 service on ``server``'s WebSocket connections: pages
    call the program's methods, and the program notifies and calls pages.

    ``methods`` is a function table: a dict (nested dicts give dotted names,
    ``{"files": {"open": f}}`` is ``files.open``) or an object whose public
    methods are exposed; :meth:`method` registers more. A method takes the
    call's params (a list as positional arguments, an object as keyword
    arguments); one that declares a keyword-only parameter named
    ``client`` gets the calling :class:`~wsserver.Client` there. It returns
    the result (any JSON value), raises :class:`RpcError` to answer with an
    error of its own, or returns a :class:`Deferred` (or a
    :class:`concurrent.futures.Future`) to answer later without holding up
    ``poll()``. Any other exception is answered ``Internal error`` and
    goes to ``on_error``; nothing about it reaches the page.

    **Who may call.** Every method is open to every page that may open a
    WebSocket to the server: the server's ``origins`` policy decides which
    pages those are (only its own by default), and ``on_upgrade_to_websocket``
    may refuse more (a page whose session is not logged in, say). RPC runs
    only on connections that passed both. With ``auto_start=False`` no
    connection speaks RPC until :meth:`start` is called for it (in
    ``on_upgrade_to_websocket`` or ``on_open``).

    **Which messages.** It takes over ``server.translate_message``. On an
    RPC connection, a text message that is a JSON object with a
    ``"jsonrpc"`` member (or an array whose first element is one) is
    JSON-RPC; anything else reaches ``on_message`` untouched, so a page may
    mix its own messages with calls. With ``exclusive=True`` every text
    message is JSON-RPC, as the specification reads (text that is not JSON
    is answered ``Parse error``). Binary messages always pass through.

    **Limits.** A batch of more than ``max_batch`` entries and JSON nested
    deeper than ``max_depth`` are refused whole (``Invalid Request``); a
    client with ``max_pending`` calls waiting for deferred results gets
    ``Too many calls pending`` (-32002) for more; a call into a page ends
    with ``Call timed out`` (-32000) after ``timeout`` seconds, and every
    call still pending when a connection ends gets ``Connection closed``
    (-32001) on both sides.

    Everything here runs on the thread that polls the server, like the
    server's own methods: from a worker thread, hand a call over with
    ``server.call_soon_threadsafe`` (a :class:`Deferred` may be settled
    from any thread).

    It also serves the JavaScript client at :data:`CLIENT_SCRIPT_PATH`
    (``/wsserver-rpc.js``) and its TypeScript declarations at
    :data:`CLIENT_TYPES_PATH`.
    """

    def __init__(
        self,
        server: Server,
        methods: Mapping[str, Any] | object | None = None,
        *,
        auto_start: bool = True,
        exclusive: bool = False,
        max_batch: int = 100,
        max_depth: int = 32,
        max_pending: int = 256,
    ) -> None:
        self.server = server
        self.auto_start = auto_start
        self.exclusive = exclusive
        self.max_batch = max_batch
        self.max_depth = max_depth
        self.max_pending = max_pending
        self.methods = MethodTable()
        if methods is not None:
            self.methods.update(methods)
        self._peers: dict[int, _Peer] = {}
        server.translate_message = self._translate
        server.add_listener("open", self._opened)
        server.add_listener("close", self._closed)
        for path, name, content_type in (
            (CLIENT_SCRIPT_PATH, "wsserver-rpc.js", "text/javascript; charset=utf-8"),
            (CLIENT_TYPES_PATH, "wsserver-rpc.d.ts", "text/plain; charset=utf-8"),
        ):
            body = (resources.files("wsserver") / "static" / name).read_bytes()
            server.http_server.route(path, handler=functools.partial(_serve_file, body, content_type))

    # -- methods -------------------------------------------------------------

    def method(self, name_or_function: str | Callable[..., Any] | None = None) -> Any:
        """Expose a function, as a decorator: ``@rpc.method`` (under its
        own name) or ``@rpc.method("files.open")``."""
        if callable(name_or_function):
            self.methods.add(name_or_function.__name__, name_or_function)
            return name_or_function

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.methods.add(name_or_function or function.__name__, function)
            return function

        return register

    # -- connections ---------------------------------------------------------

    def start(self, client: Client) -> None:
        """Make ``client``'s connection an RPC one (with ``auto_start`` every
        connection is); from ``on_upgrade_to_websocket`` on."""
        if client.id not in self._peers and not client.is_closed:
            self._peers[client.id] = _Peer(client)

    def stop(self, client: Client) -> None:
        """Stop speaking RPC with ``client``: its messages go to
        ``on_message`` from now on, and what was pending ends as if it had
        disconnected."""
        peer = self._peers.pop(client.id, None)
        if peer is not None:
            self._end_peer(peer)

    def is_started(self, client: Client) -> bool:
        return client.id in self._peers

    def clients(self) -> list[Client]:
        """The clients that speak RPC now."""
        return [peer.client for peer in self._peers.values()]

    def _opened(self, client: Client) -> None:
        if self.auto_start:
            self.start(client)

    def _closed(self, client: Client) -> None:
        peer = self._peers.pop(client.id, None)
        if peer is not None:
            self._end_peer(peer)

    def _end_peer(self, peer: _Peer) -> None:
        """Cancel the deferred results nobody waits for now, and end our
        calls into the page with ``Connection closed``, each once."""
        waiting, peer.waiting = peer.waiting, set()
        for deferred in waiting:
            for callback in deferred.cancel():
                self._invoke(peer.client, callback)
        calls, peer.calls = peer.calls, {}
        for pending in calls.values():
            self._finish(peer.client, pending, RpcError(CONNECTION_CLOSED))

    # -- the page calls us -----------------------------------------------------

    def _translate(self, client: Client, message: Message) -> bool:
        peer = self._peers.get(client.id)
        if peer is None or not isinstance(message.data, str):
            return False
        parsed = parse(message.data, exclusive=self.exclusive, max_depth=self.max_depth, max_batch=self.max_batch)
        if parsed is None:
            return False
        reply = _Reply(parsed.batch, len(parsed.items))
        for index, item in enumerate(parsed.items):
            if isinstance(item, Call):
                self._run(peer, item, reply, index)
                continue
            if isinstance(item, Answer):
                self._answered(peer, item)
                text = None
            else:
                assert isinstance(item, Invalid)
                text = encode(error_message(item.id, item.error))
            self._send_reply(peer, reply.fill(index, text))
        return True

    def _run(self, peer: _Peer, call: Call, reply: _Reply, index: int) -> None:
        """Run the method ``call`` names; answer it now, or when the
        Deferred it returns is settled."""
        method = _INTERNAL_METHODS.get(call.method) or self.methods.get(call.method)
        outcome: Any
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND)
            args, kwargs = method.arguments(call.params, peer.client)
            if len(peer.waiting) >= self.max_pending:
                raise RpcError(TOO_MANY_PENDING, data=f"{self.max_pending} calls already wait for their results")
            outcome = method.function(*args, **kwargs)
        except Exception as exc:
            ok, outcome = False, exc
        else:
            ok = True
            if isinstance(outcome, Future):
                outcome = _deferred_from_future(outcome)
            if isinstance(outcome, Deferred):
                deferred = outcome
                peer.waiting.add(deferred)
                # Settled on any thread; answered on the polling one.
                deferred.when_settled(lambda _: self.server.call_soon_threadsafe(self._settled, peer, deferred, call, reply, index))
                return
        self._send_reply(peer, reply.fill(index, self._answer(peer.client, call, ok, outcome)))

    def _settled(self, peer: _Peer, deferred: Deferred, call: Call, reply: _Reply, index: int) -> None:
        if deferred not in peer.waiting:
            return  # the caller went away (or RPC was stopped) meanwhile
        peer.waiting.discard(deferred)
        ok, outcome = deferred.outcome
        self._send_reply(peer, reply.fill(index, self._answer(peer.client, call, ok, outcome)))

    def _answer(self, client: Client, call: Call, ok: bool, outcome: Any) -> str | None:
        """The answer to ``call`` as text (None for a notification, which
        has none, section 4.1); an exception that is not an RpcError goes
        to ``on_error`` and the caller sees only ``Internal error``."""
        if ok and not call.notification:
            try:
                return encode(result_message(call.id, outcome))
            except (TypeError, ValueError) as exc:
                ok, outcome = False, exc  # a result JSON cannot carry
        if ok:
            return None
        if not isinstance(outcome, RpcError):
            self.server.report_error(client, outcome)
            outcome = RpcError(INTERNAL_ERROR)
        if call.notification:
            return None
        try:
            return encode(error_message(call.id, outcome))
        except (TypeError, ValueError) as exc:
            self.server.report_error(client, exc)  # the error's data JSON cannot carry
            return encode(error_message(call.id, RpcError(outcome.code, outcome.message)))

    def _send_reply(self, peer: _Peer, text: str | None) -> None:
        # Not to a peer that left, nor across a stop() and start() of its RPC.
        if text is not None and self._peers.get(peer.client.id) is peer:
            self.server.send(peer.client, text)

    # -- we call the page --------------------------------------------------------

    def notify(self, client: Client, method: str, *params: Any) -> bool:
        """Send a notification (a call with no answer) to one RPC client;
        False when it is not one, or no longer open."""
        if client.id not in self._peers:
            return False
        return self.server.send(client, encode(call_message(method, list(params), notification=True)))

    def publish(self, method: str, *params: Any) -> bool:
        """Send a notification to every RPC client, encoded once; True when
        every open one took it."""
        text = encode(call_message(method, list(params), notification=True))
        return self.server.publish(text, to=[peer.client for peer in self._peers.values()])

    def call(
        self,
        client: Client,
        method: str,
        *params: Any,
        on_result: ResultCallback | None = None,
        on_error: ErrorCallback | None = None,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        """Call ``method`` in the page of ``client`` (a function the page
        exposed); ``on_result(result)`` or ``on_error(error)`` runs exactly
        once, never before this returns. The error is an :class:`RpcError`:
        the page's own, ``Method not found``, ``Call timed out`` after
        ``timeout`` seconds (None: no limit but the connection's end) or
        ``Connection closed``. Without ``on_error`` an error goes to the
        server's ``on_error``.

        The params must be JSON values (TypeError or ValueError here if not).
        """
        pending = _PendingCall(on_result, on_error)
        peer = self._peers.get(client.id)
        ident = 0 if peer is None else peer.last_id + 1
        text = encode(call_message(method, list(params), ident))
        if peer is None:
            self.server.reactor.call_later(0, self._finish, client, pending, RpcError(CONNECTION_CLOSED))
            return
        peer.last_id = ident
        peer.calls[ident] = pending
        if timeout is not None:
            pending.timer = self.server.reactor.call_later(timeout, self._timed_out, peer, ident, timeout)
        # A connection already closing refuses it; its "close" ends the call then, with the others.
        self.server.send(client, text)

    def survey(
        self,
        method: str,
        *params: Any,
        on_result: Callable[[Client, Any], Any] | None = None,
        on_error: Callable[[Client, RpcError], Any] | None = None,
        timeout: float | None = DEFAULT_CALL_TIMEOUT,
    ) -> list[Client]:
        """:meth:`call` every RPC client; ``on_result(client, result)`` or
        ``on_error(client, error)`` runs once for each. The clients called."""
        clients = self.clients()
        for client in clients:
            self.call(
                client,
                method,
                *params,
                on_result=None if on_result is None else functools.partial(on_result, client),
                on_error=None if on_error is None else functools.partial(on_error, client),
                timeout=timeout,
            )
        return clients

    def _answered(self, peer: _Peer, answer: Answer) -> None:
        pending = peer.calls.pop(answer.id, None) if isinstance(answer.id, int) else None
        if pending is None:
            return  # too late (timed out), or never ours: nobody waits for it
        self._finish(peer.client, pending, answer.error if answer.error is not None else _Result(answer.result))

    def _timed_out(self, peer: _Peer, ident: int, timeout: float) -> None:
        pending = peer.calls.pop(ident, None)
        if pending is not None:
            pending.timer = None
            self._finish(peer.client, pending, RpcError(CALL_TIMED_OUT, data=f"no answer in {timeout:g} s"))

    def _finish(self, client: Client, pending: _PendingCall, outcome: _Result | RpcError) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if isinstance(outcome, _Result):
            self._invoke(client, pending.on_result, outcome.value)
        elif pending.on_error is not None:
            self._invoke(client, pending.on_error, outcome)
        else:
            self.server.report_error(client, outcome)

    def _invoke(self, client: Client, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:
            self.server.report_error(client, exc)


class _Result:
    """A successful answer's value (which may itself be None)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _deferred_from_future(future: Future[Any]) -> Deferred:
    deferred = Deferred()

    def done(future: Future[Any]) -> None:
        try:
            result = future.result()
        except BaseException as exc:  # its error, or CancelledError
            deferred.reject(exc)
        else:
            deferred.resolve(result)

    future.add_done_callback(done)
    deferred.add_cancel_callback(future.cancel)
    return deferred


def _serve_file(body: bytes, content_type: str, request: Request) -> Response:
    return Response(body, headers={"Cache-Control": "no-cache"}, content_type=content_type)
