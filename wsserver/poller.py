"""Readiness of sockets: a thin layer over the platform's poller, like the
stdlib's :mod:`selectors`, with one thing it lacks: :meth:`select` reports
**at most** ``max_events`` ready sockets per call.

With ten thousand sockets ready at once (every client gone when the Wi-Fi
drops), the stdlib's epoll selector turns all of them into a list on every
call, which costs tens of milliseconds before a single one is served, and
again on the next step. epoll (Linux) takes a bound, and hands the ready
sockets out round-robin from call to call. Elsewhere (kqueue, select on
Windows) the stdlib selector is used as it is.

Each watched socket has an *owner*, the object that serves its readiness;
:meth:`select` returns ``(owner, events)`` pairs.
"""

from __future__ import annotations

import math
import select
import selectors
import socket
from typing import Any

__all__ = ["Poller", "new_poller", "READ", "WRITE"]

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def new_poller() -> Poller:
    """The best poller of this platform: epoll where there is one."""
    return _EpollPoller() if hasattr(select, "epoll") else _SelectorsPoller()


class Poller:
    """Watches sockets for readability and writability (see the module docstring)."""

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
