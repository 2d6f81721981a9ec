"""The I/O loop: non-blocking sockets on a :mod:`selectors` selector, write
buffers, timers, and a budgeted :meth:`Reactor.poll` step.

The reactor knows sockets and time, not WebSocket. A :class:`Stream` wraps
one accepted TCP connection and reports to a :class:`StreamHandler`; a
listener hands new connections to its ``on_accept`` function.

``poll()`` does the I/O that is ready and the timers that are due, and stops
when its time budget is spent, returning whether work was left over. That
is what lets it run on a GUI thread: no step blocks, and none runs longer
than about one budget plus one unit of work (one ``recv`` of at most
``read_size`` bytes, one ``send`` of at most ``write_slice`` bytes, one
timer, one turn of a handler with work in hand).

**Fair turns.** Ready sockets wait in one queue and are served round-robin,
one unit each, carried over from step to step when the budget runs out; the
poller is asked for at most :attr:`Reactor.MAX_EVENTS` ready sockets per
step, and not at all while that many wait already, so no step costs more
with more ready sockets. A handler that has input in hand that it did not
get through (a burst of messages, pipelined requests) stops reading and
asks for a turn (:meth:`Stream.request_turn`): it continues in the next
step, behind the sockets that were waiting, so one connection gets at most
one turn per step.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import math
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, Union

from .poller import READ, WRITE, new_poller

__all__ = ["Reactor", "Stream", "StreamHandler", "Timer", "Listener"]

logger = logging.getLogger("wsserver")

# "Not now": a non-blocking socket, or a TLS one that needs more bytes from
# the peer or room in the kernel's buffer to go on.
_TRY_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

# OpenSSL's reasons for a handshake that met plain HTTP instead of TLS.
_PLAIN_HTTP_REASONS = frozenset({"HTTP_REQUEST", "HTTPS_PROXY_REQUEST"})

_PLAIN_HTTP_BODY = b"This port speaks TLS: use https:// (or wss://).\n"
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY)
)

# Bytes objects up to this size are queued as they are: a partial send
# copies what is left of one, which costs less than a view per buffer.
_SMALL_PART = 64 * 1024

# Not a poller event: the owner asked for a turn to go on with work in hand.
TURN = 1 << 8

# accept() errors that say "no descriptor or memory for a new connection now".
# (Windows reports the first and third as WSAEMFILE and WSAENOBUFS.)
_OUT_OF_RESOURCES = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "WSAEMFILE", "WSAENOBUFS") if hasattr(errno, name)
)


class Timer:
    """A call scheduled on the reactor's clock; :meth:`cancel` it if it is no longer wanted."""

    __slots__ = ("when", "callback", "args", "cancelled", "_reactor")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...], reactor: Reactor | None = None) -> None:
        self.when = when
        self.callback: Callable[..., Any] | None = callback
        self.args = args
        self.cancelled = False
        self._reactor = reactor

    def cancel(self) -> None:
        """Drop the call, and at once what it refers to (a connection's whole
        state, say), not when it would have come due."""
        if self.cancelled:
            return
        self.cancelled = True
        self.callback, self.args = None, ()
        reactor, self._reactor = self._reactor, None
        if reactor is not None:
            reactor._timer_cancelled()


class LazyBytes(Protocol):
    """Bytes made only when they are sent, a slice at a time (the UTF-8 of a
    large text message, say), so that no unit of work is as long as the
    whole. :meth:`Stream.write` takes them besides bytes-like objects."""

    def __len__(self) -> int: ...

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes (``n`` at most the length)."""

    def after(self, n: int) -> LazyBytes | bytes:
        """What is left after the first ``n`` bytes."""


# What a stream's queue holds: byte views, small bytes, and LazyBytes.
_Part = Union[bytes, memoryview, LazyBytes]  # noqa: UP007  (a runtime alias)
_BYTES_LIKE = (bytes, memoryview)


class StreamHandler(Protocol):
    """What a :class:`Stream` reports to. Every method is called on the polling thread."""

    def data_received(self, data: memoryview) -> None:
        """Bytes arrived. ``data`` is only valid during the call: copy what you keep."""

    def eof_received(self) -> bool | None:
        """The peer shut down its sending side. The stream closes once its
        output is flushed, unless this returns True: then the handler still
        has an answer to write and closes the stream itself."""

    def write_drained(self) -> None:
        """The output buffer went from above the low-water mark to below it."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The socket is closed. Called exactly once per stream."""

    def turn(self) -> None:
        """The turn asked for with :meth:`Stream.request_turn` has come: go
        on with the work in hand (and ask again if some is still left)."""


class Stream:
    """One non-blocking TCP connection with a write buffer.

    :meth:`write` sends at once what the kernel takes and buffers the rest;
    the reactor flushes the buffer in slices as the socket becomes writable.
    Writes made while the reactor serves a readiness event (the callbacks of
    one ``recv``) are gathered and sent once that event is served, so that a
    batch of small messages costs one ``send`` instead of one per message;
    once ``low_water`` bytes are gathered they are sent at once, as outside
    an event.

    **TLS.** Given an :class:`ssl.SSLSocket` made with
    ``do_handshake_on_connect=False``, the stream first drives the TLS
    handshake, one ``do_handshake()`` per readiness event, watching for
    whichever of readable or writable it asks for; the handler hears nothing
    until it is done, and what is written meanwhile waits. Then reads and
    writes go through the TLS layer; a read that returned data is followed
    by another in the same step, since TLS may hold decrypted bytes that the
    kernel no longer signals (``pending()``).
    """

    def __init__(self, reactor: Reactor, sock: socket.socket, handler: StreamHandler | None = None) -> None:
        self.reactor = reactor
        self.socket = sock
        self.handler: StreamHandler | None = handler
        self.peer_address = _address(sock, "getpeername")
        # What waits to be sent; None while nothing does (an empty deque
        # takes 600 bytes, and most connections are idle most of the time).
        self._out: collections.deque[_Part] | None = None
        #: Bytes written but not yet handed to the kernel (read-only).
        self.buffered_amount = 0
        self._events = READ
        self._closing = False
        self._closed = False
        self._reading = True
        self.low_water = reactor.write_slice
        self._above_low_water = False
        self._send_deferred = False  # queued in the reactor's list of streams to flush
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._handshaking = self._tls
        # TLS took the peer's end of stream in with data while the handler
        # had stopped reading: it is told once it reads again.
        self._eof_pending = False
        reactor.poller.watch(sock, self._events, self)

    @property
    def is_closing(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` was called (or the socket is closed)."""
        return self._closing or self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, *parts: bytes | bytearray | memoryview | LazyBytes) -> None:
        """Queue ``parts`` (bytes-like objects or :class:`LazyBytes`) for
        sending, in order. Ignored once closing."""
        if self._closing or self._closed:
            return
        was_idle = not self._out
        out = self._out
        if out is None:
            out = self._out = collections.deque()
        for part in parts:
            if part:
                # Slicing a partly sent buffer must not copy it, so the
                # queue holds byte views; small bytes go in as they are
                # (they are joined before they are sent).
                if type(part) is bytes:
                    if len(part) > _SMALL_PART:
                        part = memoryview(part)
                elif isinstance(part, (bytearray, memoryview)):
                    part = memoryview(part).cast("B")
                out.append(part)
                self.buffered_amount += len(part)
        if not out:
            self._out = None
            return
        if was_idle or self._send_deferred:
            if self.buffered_amount < self.low_water and (self._send_deferred or self.reactor.defer_send(self)):
                # Inside a readiness event, with little queued: send once the
                # event is served, together with what else its callbacks write.
                self._send_deferred = True
                return
            # Try the socket right away, which also saves a trip through
            # the selector; the kernel takes what it can before the queue
            # counts against write limits.
            self.send_now()
        elif self.buffered_amount > self.low_water:
            self._above_low_water = True

    def send_now(self) -> None:
        """Hand the kernel what it takes now; watch for writability if some
        is left. (The reactor calls it for gathered writes.)"""
        self._send_deferred = False
        if self._closed or not self._out or self._handshaking:
            return
        self._flush()
        if self._out:
            if self.buffered_amount > self.low_water:
                self._above_low_water = True
            self._watch(WRITE, True)

    def close(self) -> None:
        """Close once the buffered output is sent."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._watch(READ, False)
        if not self._out:
            self._finish(None, graceful=True)

    def abort(self, exc: BaseException | None = None) -> None:
        """Close now, dropping buffered output."""
        if self._closed:
            return
        self._closing = True
        self._finish(exc, graceful=False)

    def pause_reading(self) -> None:
        self._reading = False
        self._watch(READ, False)

    def resume_reading(self) -> None:
        if not self._closing:
            self._reading = True
            self._watch(READ, True)
            if self._eof_pending or (self._tls and not self._handshaking and self.socket.pending()):  # type: ignore[attr-defined]
                self.reactor.request_turn(self)  # decrypted bytes (or their end) the kernel will not signal

    def request_turn(self) -> None:
        """Have the handler's :meth:`~StreamHandler.turn` called when this
        stream's turn comes, after the sockets already waiting."""
        if not self._closed:
            self.reactor.request_turn(self)

    # -- called by the reactor -------------------------------------------

    def on_ready(self, mask: int) -> bool:
        """Serve one readiness event; return whether more work is likely waiting."""
        if self._handshaking:
            return self._handshake()
        more = False
        if mask & TURN and not self._closed:
            self._notify("turn")
            if self._eof_pending and self._reading and not self._closing:
                self._eof_pending = False
                self._eof()
                return False
            if self._tls and not self._closed and self.socket.pending():  # type: ignore[attr-defined]
                mask |= READ
        if mask & WRITE and self._out:
            more = self._flush()
        if mask & READ and self._reading and not self._closing:
            more = self._read() or more
        return more

    def _handshake(self) -> bool:
        """One step of the TLS handshake; on success, what waited is sent
        and the input that came with the handshake is read."""
        sock = self.socket
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch_only(READ)
            return False
        except ssl.SSLWantWriteError:
            self._watch_only(WRITE)
            return False
        except (ssl.SSLError, OSError) as exc:
            # Not TLS (plain HTTP on the TLS port), an untrusted or wrong
            # certificate on the client's side, a peer that went away: the
            # connection ends; the rest are not disturbed.
            kind = getattr(exc, "reason", None) or type(exc).__name__
            logged = self.reactor.tls_failures_logged
            if kind not in logged:
                logged.add(kind)
                logger.warning("TLS handshake failed (%s) from %s: %s; further failures of this kind are not logged", kind, self.peer_address, exc)
            if kind in _PLAIN_HTTP_REASONS:
                # Plain HTTP on the TLS port: say so in plain HTTP, so that
                # whoever typed http:// reads why, and close gracefully.
                self.socket = socket.socket(fileno=sock.detach())
                self.socket.setblocking(False)  # (a new socket object takes the default timeout)
                self._tls = self._handshaking = False
                self.write(_PLAIN_HTTP_ANSWER)
                self.close()
            else:
                self.abort(exc)
            return False
        self._handshaking = False
        self._watch_only(READ if self._reading else 0)
        if self._out:
            self.send_now()
        return self._reading  # the client's first request may have come with its last handshake message

    def _watch_only(self, events: int) -> None:
        if not self._closed and events != self._events:
            self._events = events
            self.reactor.poller.watch(self.socket, events, self)

    def _read(self) -> bool:
        reactor = self.reactor
        try:
            n = self.socket.recv_into(reactor.read_buffer)
        except _TRY_AGAIN:
            return False
        except OSError as exc:
            self.abort(exc)
            return False
        if n == 0:
            self._eof()
            return False
        ending: BaseException | bool | None = None
        if self._tls:
            n, ending = self._read_records(n)
        self._notify("data_received", reactor.read_view[:n])
        if ending is not None and not self._closing:
            if isinstance(ending, BaseException):
                self.abort(ending)
            elif self._reading:
                self._eof()
            else:
                self._eof_pending = True  # told when the handler reads again
            return False
        return n == len(reactor.read_buffer) and self._reading

    def _read_records(self, n: int) -> tuple[int, BaseException | bool | None]:
        """TLS hands out one record (16 KiB at most) per read: gather what
        it has, up to the read buffer, so that a batch of small messages is
        handled (and answered) in one go as over plain TCP. Return the bytes
        in the buffer and what came after them: True for the end of the
        stream, the error that ended it, or None."""
        view = self.reactor.read_view
        while n < len(view):
            try:
                more = self.socket.recv_into(view[n:])
            except _TRY_AGAIN:
                return n, None
            except OSError as exc:
                return n, exc
            if not more:
                return n, True
            n += more
        return n, None

    def _eof(self) -> None:
        self._watch(READ, False)
        self._reading = False
        if not self._notify("eof_received"):
            self.close()

    def _flush(self) -> bool:
        """Send one slice of the buffer; return whether the socket may take more now."""
        out = self._out
        assert out is not None  # called only with something to send
        head = out[0]
        slice_size = self.reactor.write_slice
        if len(head) < slice_size and len(out) > 1:
            head = self._coalesce()
        chunk = head[:slice_size] if isinstance(head, _BYTES_LIKE) else head.take(min(slice_size, len(head)))
        try:
            sent = self.socket.send(chunk)
        except _TRY_AGAIN:
            return False
        except OSError as exc:
            self.abort(exc)
            return False
        self.buffered_amount -= sent
        if sent == len(head):
            out.popleft()
        else:
            out[0] = head[sent:] if isinstance(head, _BYTES_LIKE) else head.after(sent)
        if not out:
            self._out = None
            self._watch(WRITE, False)
            if self._closing:
                self._finish(None, graceful=True)
                return False
        if self._above_low_water and self.buffered_amount <= self.low_water:
            self._above_low_water = False
            self._notify("write_drained")
        return bool(out) and sent == len(chunk)

    def _coalesce(self) -> _Part:
        """Join small buffers at the head of the queue into one, up to a slice."""
        out = self._out
        assert out is not None
        limit = self.reactor.write_slice
        parts: list[bytes | memoryview] = []
        size = 0
        while out and size + len(out[0]) <= limit and isinstance(out[0], _BYTES_LIKE):
            part = out.popleft()
            assert isinstance(part, _BYTES_LIKE)
            parts.append(part)
            size += len(part)
        if not parts:
            return out[0]
        joined = memoryview(b"".join(parts))
        out.appendleft(joined)
        return joined

    def _watch(self, event: int, on: bool) -> None:
        if not self._handshaking:  # the handshake chooses its own events
            self._watch_only((self._events | event) if on else (self._events & ~event))

    def _finish(self, exc: BaseException | None, graceful: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._out = None
        self.buffered_amount = 0
        self.reactor.forget(self.socket, self)
        if graceful and self._tls and not self._handshaking:
            try:
                self.socket.unwrap()  # type: ignore[attr-defined]  # sends close_notify; the peer's is not awaited
            except (ssl.SSLError, OSError, ValueError):
                pass
        if graceful:
            self.reactor.linger(self.socket)
        else:
            self.socket.close()
        self._notify("connection_lost", exc)
        self.handler = None  # no cycle with the handler outlives the connection

    def _notify(self, name: str, *args: Any) -> Any:
        handler = self.handler
        if handler is not None:
            return getattr(handler, name)(*args)
        return None


class _Lingerer:
    """A gracefully closed socket that drains what the peer still sends.

    Closing a socket with unread input makes the kernel answer with a reset,
    which can destroy the last bytes we sent before the peer reads them (an
    error page for a request that was never read, say). So a graceful close
    sends FIN and reads and drops input until the peer closes too, for at
    most :attr:`Reactor.LINGER` seconds. The connection's handler is already
    told it is closed: this is the socket's epilogue, not the connection's.
    """

    __slots__ = ("reactor", "socket", "timer", "closed", "_done")

    def __init__(self, reactor: Reactor, sock: socket.socket, done: Callable[[_Lingerer], None]) -> None:
        self.reactor = reactor
        self.socket = sock
        self.closed = False
        self._done = done
        self.timer = reactor.call_later(reactor.LINGER, self.close)
        reactor.poller.watch(sock, READ, self)

    def on_ready(self, mask: int) -> bool:
        try:
            if self.socket.recv_into(self.reactor.read_buffer):
                return False  # dropped; wait for more, or for the end
        except _TRY_AGAIN:
            return False
        except OSError:
            pass
        self.close()
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.reactor.forget(self.socket, self)
        self.socket.close()
        self._done(self)


class Listener:
    """A listening socket; each accepted connection goes to ``on_accept(sock, address)``.

    When ``accept()`` fails for want of descriptors or memory (EMFILE,
    ENFILE, ENOBUFS, ENOMEM), the listener stays readable: watching it would
    spin the GUI thread. So it stops watching for :attr:`BACKOFF` seconds,
    doubling up to :attr:`MAX_BACKOFF` while the failures go on, and logs
    once when such an episode starts and once when it ends, with a count.
    Waiting connections stay in the kernel's backlog meanwhile.
    """

    # Connections accepted per readiness event, so that a connect storm
    # cannot hold one poll step for long.
    ACCEPTS_PER_EVENT = 32
    BACKOFF = 0.05
    MAX_BACKOFF = 1.0

    def __init__(self, reactor: Reactor, sock: socket.socket, on_accept: Callable[[socket.socket, Any], None]) -> None:
        self.reactor = reactor
        self.socket = sock
        self.on_accept = on_accept
        self.address = _address(sock, "getsockname")
        self.closed = False
        self._backoff = 0.0  # the current pause, while an episode of failures lasts
        self._failures = 0
        self._episode_started = 0.0
        self._resume: Timer | None = None
        reactor.poller.watch(sock, READ, self)

    def on_ready(self, mask: int) -> bool:
        for _ in range(self.ACCEPTS_PER_EVENT):
            try:
                conn, address = self.socket.accept()
            except _TRY_AGAIN:
                return False
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._back_off(exc)
                    return False
                logger.warning("accept() failed: %s", exc)  # the peer gave up first (ECONNABORTED), say
                continue
            if self._failures:
                logger.warning(
                    "accepting connections again after %d failed accept() calls in %.1f s",
                    self._failures,
                    self.reactor.time() - self._episode_started,
                )
                self._failures, self._backoff = 0, 0.0
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_accept(conn, address)
        return True

    def _back_off(self, exc: OSError) -> None:
        if not self._failures:
            self._episode_started = self.reactor.time()
            logger.warning("accept() failed: %s; pausing the listener (up to %.1f s at a time) until it succeeds", exc, self.MAX_BACKOFF)
        self._failures += 1
        self._backoff = min(self.MAX_BACKOFF, self._backoff * 2 if self._backoff else self.BACKOFF)
        self.reactor.forget(self.socket, self)
        self._resume = self.reactor.call_later(self._backoff, self._listen_again)

    def _listen_again(self) -> None:
        self._resume = None
        if self.closed:
            return
        if self.reactor.poller.has_room():
            self.reactor.poller.watch(self.socket, READ, self)
        else:  # closing connections took select()'s last places (Windows) meanwhile
            self._resume = self.reactor.call_later(self._backoff, self._listen_again)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._resume is not None:
            self._resume.cancel()
        self.reactor.forget(self.socket, self)
        self.socket.close()


def address_reuse_option(platform: str = sys.platform) -> int:
    """The socket option a listening socket sets on ``platform``.

    On Unix, ``SO_REUSEADDR`` lets a restarted server listen on its port
    while connections of the previous run sit in TIME_WAIT. On Windows the
    same option means something else: another process could bind the very
    port the server listens on and take its connections. There
    ``SO_EXCLUSIVEADDRUSE`` forbids that instead (Windows lets a listener
    bind over TIME_WAIT connections without help, though not over ones
    still open).
    """
    if platform == "win32":
        return socket.SO_EXCLUSIVEADDRUSE  # type: ignore[attr-defined,no-any-return]
    return socket.SO_REUSEADDR


def _address(sock: socket.socket, which: str) -> tuple[Any, ...]:
    try:
        address = getattr(sock, which)()
    except OSError:
        return ("", 0)
    return tuple(address[:2]) if isinstance(address, tuple) else (address, 0)


class Reactor:
    """A selectors loop that a GUI pumps with :meth:`poll`.

    :param budget: seconds of work one :meth:`poll` may do before it returns
        with work left over (checked between units of work).
    :param read_size: bytes read per ``recv`` (one unit of work).
    :param write_slice: bytes handed to one ``send`` (one unit of work).
    """

    #: Seconds a gracefully closed socket may keep draining the peer's input.
    LINGER = 2.0
    #: Ready sockets asked of the poller per step, at most; while this many
    #: wait already, it is not asked at all.
    MAX_EVENTS = 256

    def __init__(self, budget: float = 0.002, read_size: int = 256 * 1024, write_slice: int = 256 * 1024) -> None:
        self.budget = budget
        self.read_size = read_size
        self.write_slice = write_slice
        #: The sockets' watcher; :class:`Stream`, :class:`Listener` and the
        #: lingering sockets register themselves with it.
        self.poller = new_poller()
        #: The one buffer every ``recv_into`` reads into, and a view of it.
        self.read_buffer = bytearray(read_size)
        self.read_view = memoryview(self.read_buffer)
        #: The kinds of failed TLS handshake logged so far (one line each).
        self.tls_failures_logged: set[str] = set()
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled_timers = 0  # how many of them are cancelled
        self._sequence = itertools.count()
        # Owners with work to do (poller events, or TURN), in the order they
        # are served; carried over from a step whose budget ran out.
        self._ready: dict[Any, int] = {}
        # Turns asked for during a step: served from the next one, so that a
        # connection gets at most one turn per step.
        self._turns: dict[Any, None] = {}
        # While an event is served: the streams written to, sent after it.
        self._deferred_sends: list[Stream] | None = None
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.poller.watch(self._wakeup_r, READ, _Waker(self._wakeup_r))
        self._lingering: set[_Lingerer] = set()
        #: When the poll step under way must end (infinite outside a step):
        #: handlers that loop over work in hand stop there.
        self.step_deadline = math.inf
        self._closed = False
        self._stopping = False
        self.time = time.monotonic
        #: When (on :attr:`time`'s clock) a poll step last found a socket
        #: ready: loop adapters that must pump on a timer (no :meth:`fileno`)
        #: poll fast for a while after it and slowly otherwise.
        self.last_activity = 0.0

    # -- the public loop interface ---------------------------------------

    def fileno(self) -> int | None:
        """The poller's own descriptor (epoll, kqueue), readable whenever
        any socket of the reactor is ready; None where there is none (select)."""
        return self.poller.fileno()

    def next_deadline(self) -> float | None:
        """When (on ``time.monotonic()``'s clock) the next timer falls due, or None."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        return timers[0][0] if timers else None

    def has_pending_work(self) -> bool:
        """Whether a poll step would find work without waiting for the network."""
        deadline = self.next_deadline()
        return bool(self._ready or self._turns or self._calls) or (deadline is not None and deadline <= self.time())

    def poll(self, timeout: float = 0.0) -> bool:
        """Do the ready I/O and the due timers, waiting at most ``timeout``
        seconds for something to happen; return whether work is left over.

        Work is bounded by the reactor's ``budget``: a step that spends it
        returns True, and the next step resumes where it stopped.
        """
        if self._closed:
            return False
        outer = self._deferred_sends
        if outer is not None:
            # poll() from a callback (stop() waiting for the closing
            # handshakes): what that callback wrote must go out first.
            self._deferred_sends = None
            self._send_deferred(outer)
            outer.clear()
        outer_deadline = self.step_deadline
        stop_at = self.time() + self.budget
        self.step_deadline = min(stop_at, outer_deadline)
        try:
            self._run_calls()
            self._run_timers(stop_at)
            ready = self._ready
            turns, self._turns = self._turns, {}
            for owner in turns:
                ready[owner] = ready.get(owner, 0) | TURN
            if len(ready) < self.MAX_EVENTS:
                if ready or self._calls or self.time() >= stop_at:
                    wait = 0.0
                else:
                    wait = max(0.0, timeout)
                    deadline = self.next_deadline()
                    if deadline is not None:
                        wait = max(0.0, min(wait, deadline - self.time()))
                events = self.poller.select(wait, self.MAX_EVENTS - len(ready))
                if events:
                    self.last_activity = self.time()
                for owner, mask in events:
                    ready[owner] = ready.get(owner, 0) | mask
            self._serve(ready, stop_at)
            if self.time() < stop_at:
                self._run_timers(stop_at)
        finally:
            self.step_deadline = outer_deadline
        return self.has_pending_work()

    def serve_forever(self, poll_interval: float = 1.0) -> None:
        """Poll until :meth:`stop` is called (from a callback, or
        :meth:`call_soon_threadsafe` from another thread)."""
        self._stopping = False
        while not self._stopping and not self._closed:
            self.poll(0.0 if self.has_pending_work() else poll_interval)

    def stop(self) -> None:
        """Make :meth:`serve_forever` return after the current step."""
        self._stopping = True
        self._wake()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self.time() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, callback, args, self)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def _timer_cancelled(self) -> None:
        # A cancelled timer stays in the heap until it reaches the top, which
        # a long-lived connection's timer can put off indefinitely. When they
        # are most of the heap, rebuild it without them (in place: a running
        # _run_timers holds the list).
        self._cancelled_timers += 1
        timers = self._timers
        if self._cancelled_timers > 64 and 2 * self._cancelled_timers > len(timers):
            timers[:] = [entry for entry in timers if not entry[2].cancelled]
            heapq.heapify(timers)
            self._cancelled_timers = 0

    def request_turn(self, owner: Any) -> None:
        """Serve ``owner.on_ready(TURN)`` when its turn comes: in the next
        step, behind the owners already waiting."""
        self._turns[owner] = None

    def defer_send(self, stream: Stream) -> bool:
        """Inside a readiness event, take ``stream`` to flush once the event
        is served (what its callbacks wrote goes out in one ``send``) and
        return True; outside one, return False."""
        deferred = self._deferred_sends
        if deferred is None:
            return False
        deferred.append(stream)
        return True

    @property
    def lingering(self) -> int:
        """Gracefully closed sockets still draining their peer's input."""
        return len(self._lingering)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Queue ``callback(*args)`` for the polling thread, from any thread,
        and wake the selector so it runs on the next step."""
        self._calls.append((callback, args))
        self._wake()

    def listen(
        self,
        host: str,
        port: int,
        on_accept: Callable[[socket.socket, Any], None],
        backlog: int = 128,
    ) -> Listener:
        """Bind and listen on ``host``:``port`` (0 picks a free port)."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, address_reuse_option(), 1)
            if family == socket.AF_INET6 and host in ("::", ""):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return Listener(self, sock, on_accept)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the poller and the wake-up sockets. Streams must be closed first."""
        if self._closed:
            return
        for lingerer in list(self._lingering):
            lingerer.close()
        self._closed = True
        self.poller.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    # -- internals -------------------------------------------------------

    def _serve(self, ready: dict[Any, int], stop_at: float) -> None:
        # Round-robin: an owner with more to do goes to the back of the
        # queue. At least one is served, so that every step progresses
        # however small the budget.
        first = True
        while ready:
            if not first and self.time() >= stop_at:
                return
            first = False
            owner = next(iter(ready))
            mask = ready.pop(owner)
            deferred: list[Stream] = []
            self._deferred_sends = deferred
            try:
                more = owner.on_ready(mask)
            except Exception:
                logger.exception("unhandled error while serving %r", owner)
                if isinstance(owner, Stream):
                    owner.abort()
                more = False
            finally:
                self._deferred_sends = None
                self._send_deferred(deferred)
            if more and not owner.closed:
                ready[owner] = ready.get(owner, 0) | (mask & (READ | WRITE))

    def _send_deferred(self, streams: list[Stream]) -> None:
        for stream in streams:
            try:
                stream.send_now()
            except Exception:
                logger.exception("unhandled error while sending on %r", stream)
                stream.abort()

    def _run_timers(self, stop_at: float) -> None:
        timers = self._timers
        now = self.time()
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled_timers -= 1
                continue
            callback = timer.callback
            assert callback is not None  # only a cancel() drops it
            timer.cancelled = True  # a fired timer is spent
            timer._reactor = None
            try:
                callback(*timer.args)
            except Exception:
                logger.exception("unhandled error in timer %r", callback)
            now = self.time()
            if now >= stop_at:
                return

    def _run_calls(self) -> None:
        # Only the calls queued before this step: a call that queues another
        # must not keep the step going forever. A call that pumps the reactor
        # itself (Server.stop) runs the ones behind it, so the queue may be
        # empty before the count is reached.
        calls = self._calls
        for _ in range(len(calls)):
            if not calls:
                return
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception:
                logger.exception("unhandled error in call %r", callback)

    def _wake(self) -> None:
        try:
            self._wakeup_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the buffer is full, so a wake-up is already pending

    def linger(self, sock: socket.socket) -> None:
        """Close ``sock`` gracefully: FIN now, the descriptor once the peer
        has closed too (see :class:`_Lingerer`), or at once where the poller
        has no room left to watch it (select() on Windows)."""
        if not self.poller.has_room():
            sock.close()
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            if sock.recv_into(self.read_buffer) == 0:
                sock.close()  # the peer has closed already
                return
        except _TRY_AGAIN:
            pass
        except OSError:
            sock.close()
            return
        self._lingering.add(_Lingerer(self, sock, self._lingering.discard))

    def forget(self, sock: socket.socket, owner: Any) -> None:
        """Stop watching ``sock`` and drop what ``owner`` had waiting in the queue."""
        self.poller.watch(sock, 0, owner)
        self._ready.pop(owner, None)
        self._turns.pop(owner, None)


class _Waker:
    """The reading end of the socket pair that wakes the poller from other threads."""

    closed = False

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def on_ready(self, mask: int) -> bool:
        try:
            while self.socket.recv(4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError), or closed
        return False
