"""A TCP relay on loopback that can go silent: the connections through it
stay open at both ends, but nothing passes any more, as when a phone sleeps
or its network changes under an open WebSocket. Not even their end passes:
a side that closes a silent connection leaves the other end open, never
told. New connections still pass."""

from __future__ import annotations

import selectors
import socket
import threading


class _Pair:
    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (downstream, upstream)
        self.silent = False
        self.closed = False


class Relay:
    """Forwards ``127.0.0.1:port`` to ``target`` on a thread of its own."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def silence(self) -> None:
        """From now on the connections open now pass nothing, either way."""
        with self._lock:
            for pair in self._pairs:
                pair.silent = True

    def cut_silent(self) -> None:
        """End the silent connections at both ends, as their TCP finally dies."""
        with self._lock:
            for pair in self._pairs:
                if pair.silent:
                    for sock in pair.sockets:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass  # the other end went first

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        for pair in self._pairs:
            for sock in pair.sockets:
                sock.close()
        self.listener.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, None)
        while not self._stopping.is_set():
            for key, _ in selector.select(0.05):
                if key.data is None:
                    downstream, _ = self.listener.accept()
                    upstream = socket.create_connection(self.target)
                    pair = _Pair(downstream, upstream)
                    with self._lock:
                        self._pairs.append(pair)
                    selector.register(downstream, selectors.EVENT_READ, (pair, upstream))
                    selector.register(upstream, selectors.EVENT_READ, (pair, downstream))
                    continue
                pair, other = key.data
                if pair.closed:
                    continue  # its other socket ended it earlier in this batch
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if data and not pair.silent:
                        other.sendall(data)
                except OSError:
                    data = b""
                if not data and pair.silent and other.fileno() != -1:
                    # Its end is lost with everything else: the other end stays open.
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                elif not data:
                    pair.closed = True
                    with self._lock:
                        self._pairs.remove(pair)
                    for sock in pair.sockets:
                        if sock.fileno() != -1:
                            selector.unregister(sock)
                            sock.close()
        selector.close()
