"""Shared test helpers: a started server, pumping with deadlines, client threads.

Tests never sleep to synchronise: they pump the server (or wait on an event)
until a condition holds, and fail with a clear message at a deadline.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from wsserver import Client, Server

DEADLINE = 10.0

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_program(relative: str) -> Any:
    """Import one of the project's programs that is not in a package (an
    example, a benchmark) from its path below the project's root."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"program_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["native", "select"])
def poller_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test on both of the reactor's paths, for servers made in it:
    the platform's poller (epoll here, with a descriptor a GUI loop
    watches), and ``select()`` without a descriptor, as on Windows
    (``WSSERVER_POLLER=select``; the adapters wake through a waker thread)."""
    if request.param == "select":
        monkeypatch.setenv("WSSERVER_POLLER", "select")
    else:
        monkeypatch.delenv("WSSERVER_POLLER", raising=False)
    return str(request.param)


def pump_until(server: Server, condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> None:
    """Poll ``server`` on this thread until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        server.poll(0.01)


class Worker(threading.Thread):
    """Runs ``fn(*args)`` on a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # handed to the test thread by outcome()
            self.error = exc

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def run_client(server: Server, fn: Callable[..., Any], *args: Any, timeout: float = DEADLINE) -> Any:
    """Run a blocking client ``fn(*args)`` on a thread while this thread pumps
    the server; return what it returned (or raise what it raised)."""
    worker = Worker(fn, *args)
    worker.start()
    pump_until(server, lambda: not worker.is_alive(), timeout, f"client {fn.__name__}")
    return worker.outcome()


class Recorder:
    """Records every callback of a server, and checks the invariants that
    must hold whatever happened: on_client_closed ran exactly once for each
    client that on_open ran for, and for no other."""

    def __init__(self, server: Server, echo: bool = False) -> None:
        self.server = server
        self.echo = echo
        self.opened: list[Client] = []
        self.messages: list[tuple[Client, Any]] = []
        self.closes: list[tuple[Client, int, str]] = []
        self.closed: Counter[int] = Counter()
        self.errors: list[tuple[Client | None, BaseException]] = []
        self.thread_ids: set[int] = set()
        server.on_open = self._on_open
        server.on_message = self._on_message
        server.on_close = self._on_close
        server.on_client_closed = self._on_client_closed
        server.on_error = self._on_error

    def _seen(self) -> None:
        self.thread_ids.add(threading.get_ident())

    def _on_open(self, client: Client) -> None:
        self._seen()
        self.opened.append(client)

    def _on_message(self, client: Client, message: Any) -> None:
        self._seen()
        self.messages.append((client, message))
        if self.echo:
            client.send(message.data)

    def _on_close(self, client: Client, code: int, reason: str) -> None:
        self._seen()
        self.closes.append((client, code, reason))

    def _on_client_closed(self, client: Client) -> None:
        self._seen()
        self.closed[client.id] += 1

    def _on_error(self, client: Client | None, exc: BaseException) -> None:
        self._seen()
        self.errors.append((client, exc))

    def all_closed(self) -> bool:
        return len(self.closed) == len(self.opened) and self.server.client_count() == 0

    def check_invariants(self) -> None:
        opened_ids = {c.id for c in self.opened}
        assert len(opened_ids) == len(self.opened), "on_open ran twice for a client"
        assert set(self.closed) == opened_ids, "on_client_closed did not run for exactly the opened clients"
        assert all(n == 1 for n in self.closed.values()), f"on_client_closed ran more than once: {self.closed}"
        assert self.server.client_count() == 0


def driver_of(client: Client) -> Any:
    """The :class:`~wsserver.drivers.WebSocketDriver` behind a client, for
    tests that look at its socket or its protocol state."""
    return client._state


def count_polls(server: Server) -> list[float]:
    """Record the time of every ``poll()`` made on ``server`` (patch before an adapter attaches)."""
    calls: list[float] = []
    original = server.poll

    def poll(timeout: float = 0.0) -> bool:
        calls.append(time.monotonic())
        return original(timeout)

    server.poll = poll  # type: ignore[method-assign]
    return calls


@pytest.fixture
def make_server():
    """Makes servers with the given options, started on loopback and shut down after the test."""
    made: list[Server] = []

    def make(**options: Any) -> Server:
        srv = Server(**options)
        srv.start("127.0.0.1", 0)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown()


@pytest.fixture
def server() -> Server:
    srv = Server()
    srv.start("127.0.0.1", 0)
    yield srv
    srv.shutdown()


@pytest.fixture
def recorder(server: Server) -> Recorder:
    return Recorder(server)


@pytest.fixture
def harness(caplog: pytest.LogCaptureFixture):
    """Makes :class:`swarm.Harness` servers (options as for ``Server``), stopped after the test."""
    from swarm import Harness

    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        h = Harness(caplog, **options)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def ws_url(server: Server, path: str = "") -> str:
    url = server.get_url(path)
    assert url is not None
    return url


def _unmaskers() -> list[Any]:
    from wsserver.protocol import frames

    accelerated = frames._numpy_unmasker() if importlib.util.find_spec("numpy") else None
    return [
        pytest.param(frames._unmask_in_place_pure, id="pure"),
        pytest.param(accelerated, id="numpy", marks=pytest.mark.skipif(accelerated is None, reason="numpy is not installed")),
    ]


@pytest.fixture(params=_unmaskers())
def each_unmasker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Run the test once with each way of unmasking in place: pure Python,
    and numpy's (the ``speedups`` extra) when it is installed."""
    from wsserver.protocol import frames

    monkeypatch.setattr(frames, "unmask_in_place", request.param)
    return request.param  # type: ignore[no-any-return]
