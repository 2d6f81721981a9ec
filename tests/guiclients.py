"""Client threads for the loop-adapter tests, where the host loop (Tk, Qt,
asyncio) pumps the server and real clients run beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

DEADLINE = 10.0


class ListeningClient(threading.Thread):
    """A ``websockets`` client that connects and records every message until
    the server closes the connection, then keeps the close code it got.

    ``send()`` may be called from the test thread once ``connected`` is set.
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.connected = threading.Event()
        self.messages: list[Any] = []
        self.close_code: int | None = None
        self.error: BaseException | None = None
        self._ws: Any = None

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=DEADLINE, close_timeout=DEADLINE) as ws:
                self._ws = ws
                self.connected.set()
                try:
                    for message in ws:
                        self.messages.append(message)
                except ConnectionClosed:
                    pass
                self.close_code = ws.close_code
        except BaseException as exc:  # handed to the test thread by check()
            self.error = exc
            self.connected.set()

    def send(self, message: str | bytes) -> None:
        self._ws.send(message)

    def close(self) -> None:
        self._ws.close()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def start_clients(url: str, count: int) -> list[ListeningClient]:
    clients = [ListeningClient(url) for _ in range(count)]
    for client in clients:
        client.start()
    return clients


def wait_until(pump: Callable[[], None], condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> None:
    """Run ``pump()`` (one turn of the host loop) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        pump()
