"""Readiness of sockets: a thin layer over the platform's poller, like the
stdlib's :mod:`selectors`, with one thing it lacks: :meth:`select` reports
**at most** ``max_events`` ready sockets per call.

With ten thousand sockets ready at once (every client gone when the Wi-Fi
drops), the stdlib's epoll selector turns all of them into a list on every
call, which costs tens of milliseconds before a single one is served, and
again on the next step. epoll (Linux) takes a bound, and hands the ready
sockets out round-robin from call to call. kqueue (macOS, BSD) is the
stdlib selector as it is.

Windows has neither: :class:`SelectPoller` calls ``select()``, which has no
descriptor a GUI loop could watch and takes at most 512 sockets there.
Instead, it lets a helper thread block until a socket is ready
(:meth:`SelectPoller.wait`; see :mod:`wsserver.waker`). Setting the
environment variable ``WSSERVER_POLLER=select`` makes it the poller on any
platform, which is how that code path is tested on Linux.

Each watched socket has an *owner*, the object that serves its readiness;
:meth:`select` returns ``(owner, events)`` pairs.
"""

from __future__ import annotations

import logging
import math
import os
import select
import selectors
import socket
import sys
import threading
from typing import Any

__all__ = ["Poller", "SelectPoller", "new_poller", "READ", "WRITE"]

logger = logging.getLogger("wsserver")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def new_poller() -> Poller:
    """The best poller of this platform: epoll on Linux, kqueue on macOS and
    BSD, ``select()`` on Windows (or wherever ``WSSERVER_POLLER=select``)."""
    if sys.platform == "win32" or os.environ.get("WSSERVER_POLLER") == "select":
        return SelectPoller()
    return _EpollPoller() if hasattr(select, "epoll") else _SelectorsPoller()


class Poller:
    """Watches sockets for readability and writability (see the module docstring)."""

    #: How many sockets it can watch at once; None where the system's
    #: descriptor limit is the only one.
    capacity: int | None = None

    def has_room(self) -> bool:
        """Whether one more socket can be watched."""
        return True

    def fileno(self) -> int | None:
        """A descriptor that is readable whenever a watched socket is ready, or None (select)."""
        raise NotImplementedError

    def watch(self, sock: socket.socket, events: int, owner: Any) -> None:
        """Watch ``sock`` for ``events`` (READ, WRITE or both) on behalf of
        ``owner``; 0 stops watching it. Replaces what was watched before."""
        raise NotImplementedError

    def select(self, timeout: float, max_events: int) -> list[tuple[Any, int]]:
        """Wait at most ``timeout`` seconds (0: do not wait) for ready
        sockets; return up to ``max_events`` of them as ``(owner, events)``."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _EpollPoller(Poller):
    """epoll (Linux), asked for at most ``max_events`` ready sockets per call."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watched: dict[int, tuple[Any, int]] = {}  # fd -> (owner, events)

    def fileno(self) -> int | None:
        return self._epoll.fileno()

    def watch(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        current = self._watched.get(fd)
        if not events:
            if current is not None:
                del self._watched[fd]
                self._epoll.unregister(fd)
            return
        flags = (select.EPOLLIN if events & READ else 0) | (select.EPOLLOUT if events & WRITE else 0)
        if current is None:
            self._epoll.register(fd, flags)
        elif current[1] != events:
            self._epoll.modify(fd, flags)
        self._watched[fd] = (owner, events)

    def select(self, timeout: float, max_events: int) -> list[tuple[Any, int]]:
        # Whole milliseconds, rounded up, as the stdlib does: a shorter wait
        # would be a busy loop.
        wait = math.ceil(timeout * 1e3) * 1e-3 if timeout > 0 else 0.0
        try:
            fired = self._epoll.poll(wait, max_events)
        except InterruptedError:
            return []
        ready = []
        watched = self._watched
        for fd, flags in fired:
            entry = watched.get(fd)
            if entry is None:
                continue
            owner, events = entry
            # Errors and hang-ups wake both directions, as in the stdlib.
            mask = (READ if flags & ~select.EPOLLOUT else 0) | (WRITE if flags & ~select.EPOLLIN else 0)
            ready.append((owner, mask & events))
        return ready

    def close(self) -> None:
        self._epoll.close()
        self._watched.clear()


class _SelectorsPoller(Poller):
    """The stdlib's best selector (kqueue on macOS and BSD)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def fileno(self) -> int | None:
        fileno = getattr(self._selector, "fileno", None)
        return fileno() if fileno is not None else None

    def watch(self, sock: socket.socket, events: int, owner: Any) -> None:
        try:
            self._selector.get_key(sock)
        except (KeyError, ValueError):
            if events:
                self._selector.register(sock, events, owner)
            return
        if events:
            self._selector.modify(sock, events, owner)
        else:
            self._selector.unregister(sock)

    def select(self, timeout: float, max_events: int) -> list[tuple[Any, int]]:
        try:
            return [(key.data, mask) for key, mask in self._selector.select(timeout)]
        except InterruptedError:  # pragma: no cover - PEP 475 retries select()
            return []

    def close(self) -> None:
        self._selector.close()


class SelectPoller(Poller):
    """``select()``: the poller of Windows, where there is no epoll or kqueue.

    It has no descriptor of its own (:meth:`fileno` is None), so a GUI loop
    cannot watch it. A helper thread calls :meth:`wait` instead, which
    blocks in ``select()`` on the same sockets until one is ready, and then
    asks the GUI thread to poll (:class:`wsserver.waker.WakerThread`). A
    change of the watched set made on the GUI thread meanwhile interrupts
    that ``select()``, through a socket pair, so that the thread looks again
    at the new set: a socket watched a moment ago is never missed, and one
    closed a moment ago is never selected.

    It watches at most :attr:`capacity` sockets: CPython's Windows build
    gives ``select()`` room for 512 (its ``FD_SETSIZE``), one of which is
    the interrupting socket. The same limit holds on every platform, so
    that the Windows behaviour is what runs under ``WSSERVER_POLLER=select``
    on Linux too (where ``select()`` also refuses descriptors numbered 1024
    and above).
    """

    #: Sockets one ``select()`` call takes: CPython's FD_SETSIZE on Windows.
    FD_SETSIZE = 512
    capacity = FD_SETSIZE - 1

    def __init__(self) -> None:
        self._watched: dict[int, tuple[Any, int]] = {}  # fd -> (owner, events)
        # The lists select() takes, rebuilt after a change (None).
        self._lists: tuple[list[int], list[int]] | None = None
        # The helper thread's side: what it may read while the GUI thread
        # changes the set, guarded by the lock.
        self._lock = threading.Lock()
        self._waiting = False  # a thread is inside wait()'s select()
        self._interrupted = False  # and it has been interrupted already
        self._changes = 0  # how many times the set has changed
        self._closed = False
        self._interrupt_r, self._interrupt_w = socket.socketpair()
        self._interrupt_r.setblocking(False)
        self._interrupt_w.setblocking(False)

    def fileno(self) -> int | None:
        return None

    def has_room(self) -> bool:
        return len(self._watched) < self.capacity

    def watch(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        current = self._watched.get(fd)
        if current == (owner, events) or (current is None and not events):
            return
        if current is None and not self.has_room():
            raise OSError(f"select() watches at most {self.capacity} sockets; this would be one more")
        with self._lock:
            if events:
                self._watched[fd] = (owner, events)
            else:
                del self._watched[fd]
            if current is None or not events or current[1] != events:
                self._lists = None
                self._changed()

    def select(self, timeout: float, max_events: int) -> list[tuple[Any, int]]:
        readers, writers = self._select_lists()
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select()
            return []
        if not writable:
            watched = self._watched
            return [(watched[fd][0], READ) for fd in readable]
        ready: dict[int, int] = dict.fromkeys(readable, READ)
        for fd in writable:
            ready[fd] = ready.get(fd, 0) | WRITE
        return [(self._watched[fd][0], events) for fd, events in ready.items()]

    def wait(self, timeout: float | None = None) -> bool:
        """From a helper thread: block until a watched socket is ready (True),
        or until the watched set changes, the poller closes or ``timeout``
        seconds pass (False). Does no I/O on the watched sockets."""
        with self._lock:
            if self._closed:
                return False
            readers, writers = self._select_lists()
            changes = self._changes
            self._waiting = True
        interrupt = self._interrupt_r.fileno()
        try:
            try:
                readable, writable, _ = select.select([*readers, interrupt], writers, [], timeout)
            except (OSError, ValueError) as exc:
                with self._lock:
                    unchanged = changes == self._changes
                if not unchanged:
                    return False  # a socket closed under select(): look again
                # The set itself is unfit (a descriptor select() cannot take):
                # say so once, and wait for it to change.
                logger.error("select() refused the sockets to watch (%s); waiting for the set to change", exc)
                readable, writable, _ = select.select([interrupt], [], [], timeout)
        finally:
            with self._lock:
                self._waiting = False
                self._interrupted = False
                if self._closed:
                    self._close_interrupt()  # close() left them to the thread
        if interrupt in readable:
            self._drain_interrupt()
            readable.remove(interrupt)
        return bool(readable or writable)

    def interrupt(self) -> None:
        """End the :meth:`wait` under way in another thread (it returns False)."""
        with self._lock:
            self._changed()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._watched.clear()
            self._lists = None
            self._changed()
            # A thread inside select() closes the socket pair as it leaves:
            # a descriptor closed under select() may be reused meanwhile.
            if not self._waiting:
                self._close_interrupt()

    def _select_lists(self) -> tuple[list[int], list[int]]:
        lists = self._lists
        if lists is None:
            watched = self._watched
            lists = self._lists = (
                [fd for fd, (_, events) in watched.items() if events & READ],
                [fd for fd, (_, events) in watched.items() if events & WRITE],
            )
        return lists

    def _changed(self) -> None:
        # Under the lock. One interrupting byte per select() is enough.
        self._changes += 1
        if self._waiting and not self._interrupted:
            self._interrupted = True
            try:
                self._interrupt_w.send(b"\0")
            except OSError:
                pass  # the buffer is full: an interruption is pending already

    def _close_interrupt(self) -> None:
        self._interrupt_r.close()
        self._interrupt_w.close()

    def _drain_interrupt(self) -> None:
        try:
            while self._interrupt_r.recv(4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError), or closed
