"""waker.py: the thread that stands in for the reactor's descriptor where
select() has none (Windows; WSSERVER_POLLER=select here) calls ``notify``
once per readiness, never again until armed, and stops at close()."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from conftest import DEADLINE, pump_until
from wsserver import Server
from wsserver.waker import WakerThread


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("WSSERVER_POLLER", "select")
    made = Server()
    made.start("127.0.0.1", 0)
    yield made
    made.stop()


class Notified:
    """A thread-safe ``notify`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._condition = threading.Condition()

    def __call__(self) -> None:
        with self._condition:
            self.calls += 1
            self._condition.notify_all()

    def wait_for(self, calls: int) -> None:
        with self._condition:
            assert self._condition.wait_for(lambda: self.calls >= calls, DEADLINE), f"notify was called {self.calls} times, not {calls}"


def test_notify_once_per_readiness_until_armed_again(server: Server) -> None:
    notified = Notified()
    waker = WakerThread(server, notified)
    waker.start()
    try:
        waker.arm()
        caller = socket.create_connection(server.get_local_ip(), timeout=DEADLINE)
        notified.wait_for(1)  # the listener is readable
        # Readiness stays (nobody accepted), yet without arm() there is no
        # second call: the thread waits for the GUI thread's poll.
        pump_until(server, lambda: server.connection_count() == 1, what="the accept")
        assert notified.calls == 1
        waker.arm()
        caller.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        notified.wait_for(2)  # the request
        pump_until(server, lambda: not server.reactor.has_pending_work())
        caller.close()
    finally:
        waker.close()
    assert not waker.is_alive()
    assert waker.wakeups == notified.calls


def test_close_stops_a_thread_waiting_in_select(server: Server) -> None:
    notified = Notified()
    waker = WakerThread(server, notified)
    waker.start()
    waker.arm()  # selecting now, with nothing ready
    waker.close()
    assert not waker.is_alive() and notified.calls == 0


def test_stopping_the_server_ends_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSSERVER_POLLER", "select")
    server = Server()
    server.start("127.0.0.1", 0)
    waker = WakerThread(server, Notified())
    waker.start()
    waker.arm()
    server.shutdown()
    waker._thread.join(DEADLINE)  # it looks at the server about once a second
    assert not waker.is_alive()


def test_a_reactor_with_a_descriptor_needs_no_waker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSSERVER_POLLER", raising=False)
    server = Server()
    try:
        with pytest.raises(TypeError, match="watch server.fileno"):
            WakerThread(server, Notified())
    finally:
        server.shutdown()
