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
timer).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Reactor", "Stream", "StreamHandler", "Timer", "Listener"]

logger = logging.getLogger("wsserver")

_TRY_AGAIN = (BlockingIOError, InterruptedError)


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


class Stream:
    """One non-blocking TCP connection with a write buffer.

    :meth:`write` sends at once what the kernel takes and buffers the rest;
    the reactor flushes the buffer in slices as the socket becomes writable.
    Writes made while the reactor serves a readiness event (the callbacks of
    one ``recv``) are gathered and sent once that event is served, so that a
    batch of small messages costs one ``send`` instead of one per message;
    once ``low_water`` bytes are gathered they are sent at once, as outside
    an event.
    """

    def __init__(self, reactor: Reactor, sock: socket.socket, handler: StreamHandler | None = None) -> None:
        self.reactor = reactor
        self.socket = sock
        self.handler: StreamHandler | None = handler
        self.peer_address = _address(sock, "getpeername")
        self._out: collections.deque[memoryview] = collections.deque()
        #: Bytes written but not yet handed to the kernel (read-only).
        self.buffered_amount = 0
        self._events = selectors.EVENT_READ
        self._closing = False
        self._closed = False
        self._reading = True
        self.low_water = reactor.write_slice
        self._above_low_water = False
        self._send_deferred = False  # queued in the reactor's list of streams to flush
        reactor._register(sock, self._events, self)

    @property
    def is_closing(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` was called (or the socket is closed)."""
        return self._closing or self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        """Queue ``parts`` for sending, in order. Ignored once closing."""
        if self._closing or self._closed:
            return
        was_idle = not self._out
        for part in parts:
            if part:
                view = memoryview(part).cast("B")
                self._out.append(view)
                self.buffered_amount += len(view)
        if not self._out:
            return
        if was_idle or self._send_deferred:
            deferred = self.reactor._deferred_sends
            if deferred is not None and self.buffered_amount < self.low_water:
                # Inside a readiness event, with little queued: send once the
                # event is served, together with what else its callbacks write.
                if not self._send_deferred:
                    self._send_deferred = True
                    deferred.append(self)
                return
            # Try the socket right away, which also saves a trip through
            # the selector; the kernel takes what it can before the queue
            # counts against write limits.
            self._send_now()
        elif self.buffered_amount > self.low_water:
            self._above_low_water = True

    def _send_now(self) -> None:
        """Hand the kernel what it takes now; watch for writability if some is left."""
        self._send_deferred = False
        if self._closed or not self._out:
            return
        self._flush()
        if self._out:
            if self.buffered_amount > self.low_water:
                self._above_low_water = True
            self._watch(selectors.EVENT_WRITE, True)

    def close(self) -> None:
        """Close once the buffered output is sent."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._watch(selectors.EVENT_READ, False)
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
        self._watch(selectors.EVENT_READ, False)

    def resume_reading(self) -> None:
        if not self._closing:
            self._reading = True
            self._watch(selectors.EVENT_READ, True)

    # -- called by the reactor -------------------------------------------

    def _on_ready(self, mask: int) -> bool:
        """Serve one readiness event; return whether more work is likely waiting."""
        more = False
        if mask & selectors.EVENT_WRITE and self._out:
            more = self._flush()
        if mask & selectors.EVENT_READ and self._reading and not self._closing:
            more = self._read() or more
        return more

    def _read(self) -> bool:
        reactor = self.reactor
        try:
            n = self.socket.recv_into(reactor._read_buffer)
        except _TRY_AGAIN:
            return False
        except OSError as exc:
            self.abort(exc)
            return False
        if n == 0:
            self._watch(selectors.EVENT_READ, False)
            self._reading = False
            if not self._notify("eof_received"):
                self.close()
            return False
        self._notify("data_received", reactor._read_view[:n])
        return n == len(reactor._read_buffer)

    def _flush(self) -> bool:
        """Send one slice of the buffer; return whether the socket may take more now."""
        out = self._out
        head = out[0]
        if len(head) < self.reactor.write_slice and len(out) > 1:
            head = self._coalesce()
        try:
            sent = self.socket.send(head[: self.reactor.write_slice])
        except _TRY_AGAIN:
            return False
        except OSError as exc:
            self.abort(exc)
            return False
        self.buffered_amount -= sent
        if sent == len(head):
            out.popleft()
        else:
            out[0] = head[sent:]
        if not out:
            self._watch(selectors.EVENT_WRITE, False)
            if self._closing:
                self._finish(None, graceful=True)
                return False
        if self._above_low_water and self.buffered_amount <= self.low_water:
            self._above_low_water = False
            self._notify("write_drained")
        return bool(out) and sent == min(len(head), self.reactor.write_slice)

    def _coalesce(self) -> memoryview:
        """Join small buffers at the head of the queue into one, up to a slice."""
        out = self._out
        limit = self.reactor.write_slice
        parts = []
        size = 0
        while out and size + len(out[0]) <= limit:
            part = out.popleft()
            parts.append(part)
            size += len(part)
        if not parts:
            return out[0]
        joined = memoryview(b"".join(parts))
        out.appendleft(joined)
        return joined

    def _watch(self, event: int, on: bool) -> None:
        if self._closed:
            return
        events = (self._events | event) if on else (self._events & ~event)
        if events != self._events:
            self._events = events
            self.reactor._modify(self.socket, events, self)

    def _finish(self, exc: BaseException | None, graceful: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        self.buffered_amount = 0
        self.reactor._unregister(self.socket)
        if graceful:
            self.reactor._linger(self.socket)
        else:
            self.socket.close()
        self._notify("connection_lost", exc)

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

    __slots__ = ("reactor", "socket", "timer")

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        self.reactor = reactor
        self.socket = sock
        self.timer = reactor.call_later(reactor.LINGER, self.close)
        reactor._register(sock, selectors.EVENT_READ, self)
        reactor._lingering.add(self)

    def _on_ready(self, mask: int) -> bool:
        try:
            if self.socket.recv_into(self.reactor._read_buffer):
                return False  # dropped; wait for more, or for the end
        except _TRY_AGAIN:
            return False
        except OSError:
            pass
        self.close()
        return False

    def close(self) -> None:
        self.timer.cancel()
        self.reactor._lingering.discard(self)
        self.reactor._unregister(self.socket)
        self.socket.close()


class Listener:
    """A listening socket; each accepted connection goes to ``on_accept(sock, address)``."""

    # Connections accepted per readiness event, so that a connect storm
    # cannot hold one poll step for long.
    ACCEPTS_PER_EVENT = 32

    def __init__(self, reactor: Reactor, sock: socket.socket, on_accept: Callable[[socket.socket, Any], None]) -> None:
        self.reactor = reactor
        self.socket = sock
        self.on_accept = on_accept
        self.address = _address(sock, "getsockname")
        reactor._register(sock, selectors.EVENT_READ, self)

    def _on_ready(self, mask: int) -> bool:
        for _ in range(self.ACCEPTS_PER_EVENT):
            try:
                conn, address = self.socket.accept()
            except _TRY_AGAIN:
                return False
            except OSError as exc:
                # EMFILE and friends: the listener keeps serving; the reactor
                # tries again on the next readiness event.
                logger.warning("accept() failed: %s", exc)
                return False
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_accept(conn, address)
        return True

    def close(self) -> None:
        if self.socket.fileno() >= 0:
            self.reactor._unregister(self.socket)
            self.socket.close()


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

    def __init__(self, budget: float = 0.002, read_size: int = 256 * 1024, write_slice: int = 256 * 1024) -> None:
        self.budget = budget
        self.read_size = read_size
        self.write_slice = write_slice
        self._selector = selectors.DefaultSelector()
        self._read_buffer = bytearray(read_size)
        self._read_view = memoryview(self._read_buffer)
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled_timers = 0  # how many of them are cancelled
        self._sequence = itertools.count()
        # Ready events carried over from a poll step whose budget ran out.
        self._ready: dict[Any, int] = {}
        # While an event is served: the streams written to, sent after it.
        self._deferred_sends: list[Stream] | None = None
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        self._lingering: set[_Lingerer] = set()
        self._closed = False
        self._stopping = False
        self.time = time.monotonic
        #: When (on :attr:`time`'s clock) a poll step last found a socket
        #: ready: loop adapters that must pump on a timer (no :meth:`fileno`)
        #: poll fast for a while after it and slowly otherwise.
        self.last_activity = 0.0

    # -- the public loop interface ---------------------------------------

    def fileno(self) -> int | None:
        """The selector's own descriptor (epoll, kqueue), readable whenever
        any socket of the reactor is ready; None where there is none (select)."""
        fileno = getattr(self._selector, "fileno", None)
        return fileno() if fileno is not None else None

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
        return bool(self._ready or self._calls) or (deadline is not None and deadline <= self.time())

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
        start = self.time()
        stop_at = start + self.budget
        self._run_calls()
        self._run_timers(stop_at)
        if self._ready or self._calls or self.time() >= stop_at:
            wait = 0.0
        else:
            wait = max(0.0, timeout)
            deadline = self.next_deadline()
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - self.time()))
        try:
            events = self._selector.select(wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select()
            events = []
        if events:
            self.last_activity = self.time()
        ready = self._ready
        for key, mask in events:
            ready[key] = ready.get(key, 0) | mask
        self._serve(ready, stop_at)
        if self.time() < stop_at:
            self._run_timers(stop_at)
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
            if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        """Release the selector and the wake-up sockets. Streams must be closed first."""
        if self._closed:
            return
        for lingerer in list(self._lingering):
            lingerer.close()
        self._closed = True
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    # -- internals -------------------------------------------------------

    def _serve(self, ready: dict[Any, int], stop_at: float) -> None:
        # Always serve at least one event, so that a poll step makes progress
        # however small the budget.
        first = True
        while ready:
            if not first and self.time() >= stop_at:
                return
            first = False
            key = next(iter(ready))
            mask = ready.pop(key)
            owner = key.data
            if owner is None:
                self._drain_wakeup()
                continue
            deferred: list[Stream] = []
            self._deferred_sends = deferred
            try:
                more = owner._on_ready(mask)
            except Exception:
                logger.exception("unhandled error while serving %r", owner)
                if isinstance(owner, Stream):
                    owner.abort()
                more = False
            finally:
                self._deferred_sends = None
                self._send_deferred(deferred)
            if not more:
                continue
            if self._selector.get_map().get(key.fd) is key:
                ready[key] = mask

    def _send_deferred(self, streams: list[Stream]) -> None:
        for stream in streams:
            try:
                stream._send_now()
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

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _linger(self, sock: socket.socket) -> None:
        """Close ``sock`` gracefully: FIN now, the descriptor once the peer
        has closed too (see :class:`_Lingerer`)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            if sock.recv_into(self._read_buffer) == 0:
                sock.close()  # the peer has closed already
                return
        except _TRY_AGAIN:
            pass
        except OSError:
            sock.close()
            return
        _Lingerer(self, sock)

    def _register(self, sock: socket.socket, events: int, owner: Any) -> None:
        self._selector.register(sock, events, owner)

    def _modify(self, sock: socket.socket, events: int, owner: Any) -> None:
        if events:
            if self._is_registered(sock):
                self._selector.modify(sock, events, owner)
            else:
                self._selector.register(sock, events, owner)
        elif self._is_registered(sock):
            self._unregister(sock)

    def _is_registered(self, sock: socket.socket) -> bool:
        try:
            self._selector.get_key(sock)
        except (KeyError, ValueError):
            return False
        return True

    def _unregister(self, sock: socket.socket) -> None:
        try:
            key = self._selector.unregister(sock)
        except (KeyError, ValueError):
            return
        self._ready.pop(key, None)
