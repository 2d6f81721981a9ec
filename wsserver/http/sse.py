"""Server-Sent Events (the ``text/event-stream`` format of the HTML
standard): a response that stays open and that the application writes
events into whenever it likes.

A route handler returns an :class:`EventStream` and keeps it::

    streams = set()

    @server.http_server.route("/events")
    def events(request):
        stream = EventStream(on_close=streams.discard)
        streams.add(stream)
        return stream

    for stream in streams:          # later, from any callback or timer
        stream.send("42", event="temperature")

Like the rest of the server, a stream is used from the polling thread
(another thread hands work over with ``server.call_soon_threadsafe``).
The stream never buffers without bound: events wait in the stream only
while the connection is backed up, and :meth:`EventStream.send` refuses new
ones (returns False) once ``write_limit`` bytes are waiting. It ends when
the application calls :meth:`EventStream.close` or the client goes away.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["EventStream"]

#: Bytes an event stream may hold before its connection adopts it (the
#: connection's ``write_limit`` applies after that).
DEFAULT_LIMIT = 1024 * 1024


class EventStream:
    """A ``text/event-stream`` response body to return from a route handler.

    :param retry: milliseconds the browser waits before reconnecting after
        the stream ends (the ``retry:`` field), or None for its default.
    :param on_close: called with the stream, once, when it ends for any
        reason (the client left, :meth:`close`, the server stopped). An
        exception it raises goes to the server's ``on_error``.
    """

    #: The response headers: no caching, so proxies pass events through as they come.
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}

    def __init__(self, *, retry: int | None = None, on_close: Callable[[EventStream], Any] | None = None) -> None:
        self.on_close = on_close
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._closed = False
        self._limit = DEFAULT_LIMIT
        self._resume: Callable[[], None] | None = None
        self._backlog: Callable[[], int] = lambda: 0
        if retry is not None:
            self._put(f"retry: {int(retry)}\n\n".encode())

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (it takes no more events)."""
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes of events not yet handed to the kernel."""
        return self._queued + self._backlog()

    def send(self, data: str, event: str | None = None, id: str | None = None) -> bool:
        """Send one event; ``data`` may have several lines.

        False if the stream is closed, or if the client is so slow that
        ``write_limit`` bytes already wait for it (the event is dropped).
        """
        fields = []
        if event is not None:
            fields.append(f"event: {_single_line(event)}")
        if id is not None:
            fields.append(f"id: {_single_line(id)}")
        fields.extend(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        return self._put(("\n".join(fields) + "\n\n").encode("utf-8"))

    def comment(self, text: str = "") -> bool:
        """Send a comment line, which browsers ignore: a keep-alive that
        lets a dead connection be noticed."""
        return self._put(f": {_single_line(text)}\n\n".encode("utf-8"))

    def close(self) -> None:
        """End the stream: the events already queued are still sent, then
        the response ends (a browser's ``EventSource`` reconnects after
        ``retry`` unless its page closes it). Runs ``on_close`` once.

        The connection calls it too when the client goes away.
        """
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self.on_close is not None:
            self.on_close(self)

    def _put(self, payload: bytes) -> bool:
        if self._closed or self.buffered_amount + len(payload) > self._limit:
            return False
        self._queue.append(payload)
        self._queued += len(payload)
        self._wake()
        return True

    def _wake(self) -> None:
        if self._resume is not None:
            self._resume()

    # -- the connection's side -------------------------------------------

    def _attach(self, resume: Callable[[], None], backlog: Callable[[], int], limit: int) -> None:
        """Adopted by a connection: ``resume()`` makes it pull chunks again,
        ``backlog()`` is its unsent byte count, ``limit`` its write limit."""
        self._resume, self._backlog, self._limit = resume, backlog, limit

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes | None:
        """The next queued bytes; None when there are none yet (the
        connection then waits for ``resume()``); StopIteration once closed
        and drained."""
        if self._queue:
            payload = self._queue.popleft()
            self._queued -= len(payload)
            return payload
        if self._closed:
            raise StopIteration
        return None


def _single_line(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise ValueError("event names, ids and comments are single lines")
    return text
