"""poller.py: both pollers watch, report and forget sockets the same way,
and the epoll one reports at most ``max_events`` per call, round-robin."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from wsserver.poller import READ, WRITE, Poller, _EpollPoller, _SelectorsPoller, new_poller

POLLERS = [pytest.param(_SelectorsPoller, id="selectors")]
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


def test_the_platform_poller_has_a_descriptor_where_it_can() -> None:
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
