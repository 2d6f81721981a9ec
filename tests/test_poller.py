"""poller.py: every poller watches, reports and forgets sockets the same way;
the epoll one reports at most ``max_events`` per call, round-robin; the
select() one (Windows) lets a helper thread wait for readiness, and holds
at most its capacity."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from conftest import DEADLINE, Worker
from wsserver.poller import READ, WRITE, Poller, SelectPoller, _EpollPoller, _SelectorsPoller, new_poller

POLLERS = [pytest.param(_SelectorsPoller, id="selectors"), pytest.param(SelectPoller, id="select")]
if hasattr(select, "epoll"):
    POLLERS.insert(0, pytest.param(_EpollPoller, id="epoll"))


@pytest.fixture(params=POLLERS)
def poller(request: pytest.FixtureRequest) -> Iterator[Poller]:
    made: Poller = request.param()
    yield made
    made.close()


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(6)]
    yield made
    for a, b in made:
        a.close()
        b.close()


def test_the_platform_poller_has_a_descriptor_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSSERVER_POLLER", raising=False)
    poller = new_poller()
    try:
        assert (poller.fileno() is not None) == (hasattr(select, "epoll") or hasattr(select, "kqueue"))
    finally:
        poller.close()


def test_readiness_is_reported_for_the_owner_and_the_events_watched(poller: Poller, pairs: list) -> None:
    (a, b), (c, d) = pairs[:2]
    poller.watch(a, READ, "a")
    poller.watch(c, READ | WRITE, "c")
    assert dict(poller.select(0, 10)) == {"c": WRITE}  # nothing to read yet; c is writable
    b.send(b"x")
    assert dict(poller.select(0, 10)) == {"a": READ, "c": WRITE}
    poller.watch(c, READ, "c")  # no longer asks for writability
    assert dict(poller.select(0, 10)) == {"a": READ}
    poller.watch(a, 0, "a")  # forgotten
    poller.watch(a, 0, "a")  # forgetting twice is harmless
    assert poller.select(0, 10) == []


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="the bound needs epoll")
def test_epoll_reports_at_most_max_events_and_the_rest_next_time(pairs: list) -> None:
    poller = _EpollPoller()
    try:
        for n, (a, b) in enumerate(pairs):
            poller.watch(a, READ, n)
            b.send(b"x")
        first = poller.select(0, 4)
        second = poller.select(0, 4)
        assert len(first) == 4 and len(second) == 4
        seen = {owner for owner, _ in first + second}
        assert seen == set(range(len(pairs))), "every ready socket is reported within two calls"
    finally:
        poller.close()


def test_the_environment_forces_the_select_poller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSSERVER_POLLER", "select")
    poller = new_poller()
    try:
        assert isinstance(poller, SelectPoller) and poller.fileno() is None
    finally:
        poller.close()


@pytest.fixture
def select_poller() -> Iterator[SelectPoller]:
    made = SelectPoller()
    yield made
    made.close()


def test_wait_returns_when_a_watched_socket_is_ready(select_poller: SelectPoller, pairs: list) -> None:
    (a, b), (c, d) = pairs[:2]
    select_poller.watch(a, READ, "a")
    select_poller.watch(c, READ, "c")
    waiter = Worker(select_poller.wait, DEADLINE)
    waiter.start()
    b.send(b"x")
    waiter.join(DEADLINE)
    assert waiter.outcome() is True
    assert select_poller.select(0, 10) == [("a", READ)], "wait() read nothing: the data is still there"


def test_a_socket_watched_during_wait_interrupts_it(select_poller: SelectPoller, pairs: list) -> None:
    (a, b), (c, d) = pairs[:2]
    select_poller.watch(a, READ, "a")
    entered = threading.Event()
    results: list[bool] = []

    def wait_twice() -> None:
        entered.set()
        results.append(select_poller.wait(DEADLINE))  # interrupted by the watch below
        results.append(select_poller.wait(DEADLINE))  # sees c, ready from the start

    waiter = Worker(wait_twice)
    waiter.start()
    assert entered.wait(DEADLINE)
    d.send(b"x")  # c is readable before it is watched
    # Until the thread is inside select(), a change cannot interrupt it:
    # then it selects on the new set, which has c, at once.
    select_poller.watch(c, READ, "c")
    waiter.join(DEADLINE)
    waiter.outcome()
    assert True in results
    assert select_poller.select(0, 10) == [("c", READ)]


def test_close_ends_a_wait(pairs: list) -> None:
    poller = SelectPoller()
    a, _ = pairs[0]
    poller.watch(a, READ, "a")
    entered = threading.Event()
    waiter = Worker(lambda: (entered.set(), poller.wait(DEADLINE))[1])
    waiter.start()
    assert entered.wait(DEADLINE)
    poller.close()
    waiter.join(DEADLINE)
    assert not waiter.is_alive() and waiter.outcome() is False
    assert poller.wait(DEADLINE) is False, "a closed poller does not wait"


def test_the_select_poller_holds_at_most_its_capacity(select_poller: SelectPoller) -> None:
    sockets = [socket.socket() for _ in range(select_poller.capacity + 1)]
    try:
        for n, sock in enumerate(sockets[:-1]):
            select_poller.watch(sock, READ, n)
        assert not select_poller.has_room()
        with pytest.raises(OSError, match="at most 511"):
            select_poller.watch(sockets[-1], READ, "one too many")
        select_poller.watch(sockets[0], WRITE, 0)  # a change of events is no new place
        select_poller.watch(sockets[0], 0, 0)
        assert select_poller.has_room()
        select_poller.watch(sockets[-1], READ, "now it fits")
    finally:
        for sock in sockets:
            sock.close()
