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

A stream that stays open never skips an event: events wait in the stream
while the connection is backed up and go out in order. Memory is bounded by
ending the stream, as for a WebSocket client: once more than the server's
``write_limit`` waits, the client has ``write_grace`` to catch up, and an
event that would take it past ``max_write_buffer`` ends it at once. It also
ends when the application calls :meth:`EventStream.close` or the client goes
away; :meth:`EventStream.send` returns False only once it has ended.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["EventStream", "StreamSink"]

#: Bytes an event stream may hold before a connection adopts it (the
#: connection's ``max_write_buffer`` applies after that).
DEFAULT_LIMIT = 1024 * 1024


class StreamSink(Protocol):
    """The connection that sends an :class:`EventStream`, as the stream sees it."""

    #: Bytes the stream may have waiting before the connection starts ``write_grace``.
    write_limit: int
    #: Bytes beyond which the stream ends instead of queueing more.
    max_buffer: int

    @property
    def unsent(self) -> int:
        """Bytes the connection took from the stream and has not sent yet."""

    def resume(self) -> None:
        """Pull queued chunks again (the stream has something to send)."""

    def backed_up(self) -> None:
        """More than ``write_limit`` waits: the client's grace period starts."""

    def overflow(self) -> None:
        """An event would go past ``max_buffer``: end the connection."""


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
        self._sink: StreamSink | None = None
        if retry is not None:
            self._put(f"retry: {int(retry)}\n\n".encode())

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (it takes no more events)."""
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes of events not yet handed to the kernel."""
        return self._queued + (self._sink.unsent if self._sink is not None else 0)

    def send(self, data: str, event: str | None = None, id: str | None = None) -> bool:
        """Send one event; ``data`` may have several lines.

        True when it is queued: it goes out in order, or the stream ends.
        False once the stream has ended, including when this event would
        have taken a client that does not read past ``max_write_buffer``.
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
        return self._put(f": {_single_line(text)}\n\n".encode())

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
        if self._closed:
            return False
        sink = self._sink
        if self.buffered_amount + len(payload) > (DEFAULT_LIMIT if sink is None else sink.max_buffer):
            # Never skip an event: end the stream instead.
            if sink is None:
                self.close()
            else:
                sink.overflow()
            return False
        self._queue.append(payload)
        self._queued += len(payload)
        self._wake()
        if sink is not None and self.buffered_amount > sink.write_limit:
            sink.backed_up()
        return True

    def _wake(self) -> None:
        if self._sink is not None:
            self._sink.resume()

    # -- the connection's side -------------------------------------------

    def attach(self, sink: StreamSink) -> None:
        """Adopted by the connection that sends it (called by the server)."""
        self._sink = sink

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
