"""Resumable sessions (:mod:`wsserver.resume`) over real loopback sockets.

The transport is the ``websockets`` library's threaded client; the resume
protocol on top of it (the ``.`` and ``!`` prefixes, the counts, the acks,
the resume query) is :class:`Page`, a minimal reference client written
here from the wire format that ``wsserver.resume``'s docstring documents.
The server is polled on the test thread; a page's connect runs on a worker
thread while the test thread pumps, and everything after it is done from
the test thread (``recv(timeout=0)`` never blocks), so the order of events
is the test's.

A drop is the client's TCP socket closed without a Close frame: with a
reset (``SO_LINGER`` 0) or after a ``shutdown()`` (a FIN).
"""

from __future__ import annotations

import gc
import inspect
import json
import random
import socket
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import DEADLINE, Recorder, load_program, pump_until, run_client, ws_url
from rawws import client_frame, handshake_request
from swarm import Harness, raise_open_file_limit
from wsserver import Client, Request, Server, UpgradeResponse
from wsserver.http.sessions import Session, Sessions
from wsserver.protocol import Data, Message, Opcode
from wsserver.resume import ACK_DELAY, CLOSE_TO_RESUME, REPLAY_PER_TURN, ResumableSession, ResumePolicy

# -- the page's side of the protocol --------------------------------------------

#: A page keeps its connection beyond any ``with`` block: websockets 17 asks
#: such a ``connect()`` to say ``legacy=True`` (or it warns); 16, the last
#: release for Python 3.10, has no such flag and always connects directly.
HELD_OPEN = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def prefixed(data: Data) -> Data:
    """An application message as it goes on the wire: ``.`` (0x2E) first."""
    return "." + data if isinstance(data, str) else b"." + bytes(data)


class Page:
    """A page with a resumable session: the reference client of the wire
    format, over one ``websockets`` connection at a time.

    ``outbox[n - 1]`` is the page's application message number ``n``;
    ``first_held`` the oldest the server has not acknowledged (the older
    ones are let go, never sent again). ``received`` counts the server's
    application messages taken, ``got`` keeps them (prefix removed), and
    ``frames`` every message of each connection as it came (prefix kept).
    A message sent while no connection is ready waits in the outbox and
    goes with the resume, after the ``resumed`` message says what the
    server has.
    """

    def __init__(self, server: Server, origin: str | None = None, headers: dict[str, str] | None = None, auto_ack: bool = True) -> None:
        self.server = server
        self.headers = dict(headers or {})
        if origin is not None:
            self.headers["Origin"] = origin
        self.auto_ack = auto_ack
        #: Every connection made, closed when the test ends.
        self.connections: list[ClientConnection] = []
        self.ws: ClientConnection | None = None
        #: The connection has had its session or resumed message.
        self.ready = False
        #: How the last connection ended, as the page saw it: (code, reason).
        self.ended: tuple[int | None, str | None] | None = None
        self.token: str | None = None
        self.ack_every = 1
        self.received = 0
        self.acknowledged = 0
        self.got: list[Data] = []
        self.outbox: list[Data] = []
        self.first_held = 1
        self.frames: list[list[Data]] = []
        self.controls: list[dict[str, Any]] = []
        #: The ``resumeFailed`` reasons of resumes that were refused.
        self.failures: list[str] = []
        self.sessions = 0
        self.network_lost = False
        self._resuming = False  # the connection being opened asked to resume

    # -- connecting ------------------------------------------------------

    def url(self, token: str | None = None, received: int | None = None, first: int | None = None) -> str:
        """The URL of the next connect: a new session, or the resume of
        ``token`` with this page's counts (or the ones given)."""
        token = token or self.token
        query = {"wsserver-resume": token or "new"}
        if token is not None:
            query["wsserver-received"] = str(self.received if received is None else received)
            query["wsserver-first"] = str(self.first_held if first is None else first)
        return ws_url(self.server, "/?" + urlencode(query))

    def connect(self, url: str | None = None) -> dict[str, Any]:
        """Open a connection (a resume once the page has a token) and pump
        until its first message, the ``session`` or ``resumed`` control
        message, has been handled; return that message."""
        assert self.ws is None, "the page is connected"
        target = url or self.url()
        headers = self.headers

        def open_connection() -> ClientConnection:
            return connect(target, additional_headers=headers, proxy=None, open_timeout=DEADLINE, close_timeout=DEADLINE, ping_interval=None, **HELD_OPEN)

        ws = run_client(self.server, open_connection)
        self.connections.append(ws)
        self.ws, self.ready, self.ended, self.network_lost = ws, False, None, False
        self._resuming = "wsserver-resume=new" not in target
        self.frames.append([])
        controls = len(self.controls)
        self.until(lambda: self.ready or self.ws is None, "the session's first message")
        assert self.ready, f"the connection ended before its first message: {self.ended}"
        return self.controls[controls]

    def drop(self, how: str = "reset") -> None:
        """End the connection without a Close frame: a TCP reset, or a FIN
        (``how="fin"``). What arrived and was not taken yet is lost."""
        ws = self.ws
        assert ws is not None
        if how == "reset":
            ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            ws.socket.shutdown(socket.SHUT_RDWR)
        self._discard(ws)
        self.ws, self.ready = None, False

    def forget(self) -> ClientConnection:
        """Give up on the connection without closing it (the drop went
        unnoticed by the server): it stays open and is never read again."""
        ws = self.ws
        assert ws is not None
        self.ws, self.ready = None, False
        return ws

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake, from the page's side."""
        ws = self.ws
        assert ws is not None
        run_client(self.server, ws.close, code, reason)
        self.ended = (ws.close_code, ws.close_reason)
        self.ws, self.ready = None, False

    def discard(self) -> None:
        for ws in self.connections:
            self._discard(ws)

    @staticmethod
    def _discard(ws: ClientConnection) -> None:
        ws.close_socket()
        ws.recv_events_thread.join(DEADLINE)

    # -- sending ---------------------------------------------------------

    def send(self, data: Data) -> None:
        """Send application message number ``len(outbox) + 1`` (or keep it for the resume)."""
        self.outbox.append(data)
        if self.ready and not self.network_lost:
            self._transmit(prefixed(data))

    def lose_network(self) -> None:
        """From now on what this connection sends is lost on the way (the
        page believes it sent it: it is numbered and held for the resume)."""
        self.network_lost = True

    def ack(self) -> None:
        self.send_raw("!" + json.dumps({"type": "ack", "received": self.received}))
        self.acknowledged = self.received

    def send_raw(self, data: Data) -> None:
        """Send a message as it is, outside the protocol."""
        assert self.ws is not None
        self._transmit(data)

    def _transmit(self, data: Data) -> None:
        assert self.ws is not None
        try:
            self.ws.send(data)
        except ConnectionClosed:
            pass  # it stays in the outbox: the resume sends it again

    # -- receiving -------------------------------------------------------

    def take(self) -> None:
        """Handle every message the connection has received so far."""
        for _ in range(100_000):  # bounded: far more than a test sends
            ws = self.ws
            if ws is None:
                return
            try:
                raw = ws.recv(timeout=0)
            except TimeoutError:
                return
            except ConnectionClosed:
                self.ended = (ws.close_code, ws.close_reason)
                self.ws, self.ready = None, False
                return
            self._handle(raw)

    def until(self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
        """Pump the server, taking what arrives, until ``condition()``."""

        def check() -> Any:
            self.take()
            return condition()

        pump_until(self.server, check, timeout, what)

    def _handle(self, raw: Data) -> None:
        self.frames[-1].append(raw)
        if isinstance(raw, str) and raw.startswith("!"):
            control = json.loads(raw[1:])
            assert isinstance(control, dict), raw
            self.controls.append(control)
            kind = control["type"]
            assert self.ready or kind in ("session", "resumed"), f"a connection's first message is session or resumed, not {raw!r}"
            if kind == "session":
                self._new_session(control)
            elif kind == "resumed":
                self._resumed(control["received"])
            elif kind == "ack":
                received = control["received"]
                assert self.first_held - 1 <= received <= len(self.outbox), f"the server acknowledged {received} of {len(self.outbox)}"
                self.first_held = received + 1
            else:
                raise AssertionError(f"unknown control message {raw!r}")
            return
        assert self.ready, f"an application message came before the session's: {raw!r}"
        assert raw[:1] == ("." if isinstance(raw, str) else b"."), f"an application message without its prefix: {raw!r}"
        self.received += 1
        self.got.append(raw[1:])
        if self.auto_ack and self.received - self.acknowledged >= self.ack_every:
            self.ack()

    def _new_session(self, control: dict[str, Any]) -> None:
        if self._resuming:
            assert isinstance(control.get("resumeFailed"), str), f"a refused resume says why: {control}"
            self.failures.append(control["resumeFailed"])
        else:
            assert "resumeFailed" not in control, control
        self.sessions += 1
        self.token = control["token"]
        self.ack_every = control["ackEvery"]
        self.received = self.acknowledged = 0
        self.got, self.outbox, self.first_held = [], [], 1
        self.ready = True

    def _resumed(self, received: int) -> None:
        """The server has this page's messages up to ``received``: let
        those go, send the rest again, then carry on."""
        assert self.first_held - 1 <= received <= len(self.outbox), f"the server has {received}; the page holds {self.first_held} to {len(self.outbox)}"
        self.first_held = received + 1
        self.acknowledged = self.received  # the resume's query said as much
        self.ready = True
        for data in self.outbox[received:]:
            self._transmit(prefixed(data))


def refused_status(server: Server, url: str) -> int:
    """The HTTP status an upgrade to ``url`` is refused with (it must be refused)."""

    def upgrade() -> int:
        try:
            with connect(url, proxy=None, open_timeout=DEADLINE):
                raise AssertionError("the upgrade was accepted")
        except InvalidStatus as exc:
            return exc.response.status_code

    return int(run_client(server, upgrade))


@pytest.fixture
def pages() -> Iterator[Callable[..., Page]]:
    """Makes :class:`Page` objects; their sockets are closed after the test."""
    made: list[Page] = []

    def make(server: Server, **options: Any) -> Page:
        page = Page(server, **options)
        made.append(page)
        return page

    yield make
    for page in made:
        page.discard()


@pytest.fixture(autouse=True)
def nothing_escapes(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No exception escaped into the reactor's last-resort handler (which
    is where one raised inside ``poll()`` would go)."""
    yield
    escaped = [r.getMessage() for r in caplog.records if r.name == "wsserver" and "unhandled error" in r.getMessage()]
    assert not escaped, escaped


# -- the server's side ------------------------------------------------------------


class ResumeRecorder(Recorder):
    """A :class:`Recorder` that also records ``on_resumed`` and
    ``on_resume_failed``, and the order of the lifecycle callbacks."""

    def __init__(self, server: Server, echo: bool = False) -> None:
        super().__init__(server, echo)
        self.log: list[tuple[str, int]] = []
        self.resumed: list[Client] = []
        self.failed: list[tuple[Client, str]] = []
        server.on_resumed = self._on_resumed
        server.on_resume_failed = self._on_resume_failed

    def _on_open(self, client: Client) -> None:
        super()._on_open(client)
        self.log.append(("open", client.id))

    def _on_client_closed(self, client: Client) -> None:
        super()._on_client_closed(client)
        self.log.append(("closed", client.id))

    def _on_resumed(self, client: Client) -> None:
        self.resumed.append(client)
        self.log.append(("resumed", client.id))

    def _on_resume_failed(self, client: Client, reason: str) -> None:
        self.failed.append((client, reason))
        self.log.append(("resume failed", client.id))

    def got(self, client: Client) -> list[Data]:
        """What ``on_message`` was given for ``client``, in order."""
        return [message.data for c, message in self.messages if c is client]


def session_of(client: Client) -> ResumableSession:
    state = client._state
    assert isinstance(state, ResumableSession), f"{client} has no resumable session: {state!r}"
    return state


def numbered(prefix: str, first: int, last: int) -> list[Data]:
    return [f"{prefix}{n}" for n in range(first, last + 1)]


def stop_and_check(server: Server, recorder: Recorder) -> None:
    """Stop the server (it ends every session left) and check that
    ``on_client_closed`` ran exactly once per opened client."""
    server.stop()
    recorder.check_invariants()
    assert server._context.sessions == {}


def open_page(make_server: Callable[..., Server], pages: Callable[..., Page], policy: ResumePolicy | None = None, **options: Any) -> tuple[Server, ResumeRecorder, Page, Client]:
    """A resumable server, and a page connected to it with a new session."""
    server = make_server(resume=policy or ResumePolicy(), **options)
    recorder = ResumeRecorder(server)
    page = pages(server)
    hello = page.connect()
    assert hello["type"] == "session"
    assert len(recorder.opened) == 1
    return server, recorder, page, recorder.opened[0]


def drop_and_wait(page: Page, client: Client, how: str = "reset") -> None:
    page.drop(how)
    pump_until(page.server, lambda: client.is_away, what="the server to notice the drop")


# -- 1. a new session ---------------------------------------------------------------


def test_a_new_session_is_announced_and_every_message_carries_its_prefix(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """``wsserver-resume=new``: the first message is ``!`` and the
    ``session`` object (token, ``ackEvery``, no ``resumeFailed``); every
    application message carries ``.`` (the byte 0x2E before binary) on the
    wire both ways, and ``on_message`` and the page see it without."""
    server, recorder, page, client = open_page(make_server, pages, ResumePolicy(max_messages=40))
    first = page.frames[0][0]
    assert isinstance(first, str) and first.startswith("!")
    hello = json.loads(first[1:])
    assert set(hello) == {"type", "token", "ackEvery"}
    assert hello["type"] == "session" and hello["ackEvery"] == 10
    assert isinstance(hello["token"], str) and len(hello["token"]) >= 16
    assert server._context.sessions[hello["token"]] is session_of(client)
    assert recorder.log == [("open", client.id)] and recorder.failed == []

    assert client.send("text from the server") is True
    assert client.send(b"\x00binary\xff") is True
    assert server.publish("published") is True
    page.until(lambda: page.received == 3, "the server's messages")
    assert page.frames[0][1:] == [".text from the server", b".\x00binary\xff", ".published"]
    assert page.got == ["text from the server", b"\x00binary\xff", "published"]

    page.send("text from the page")
    page.send(b"\x00\x2e\xff")
    page.until(lambda: len(recorder.messages) == 2, "the page's messages")
    assert [(m.type, m.data) for _, m in recorder.messages] == [(Opcode.TEXT, "text from the page"), (Opcode.BINARY, b"\x00\x2e\xff")]
    assert session_of(client).received == 2 and session_of(client).sent == 3
    stop_and_check(server, recorder)


# -- 2. a drop, and the resume -----------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_a_drop_without_close_resumes_with_every_message_once_in_order(make_server: Callable[..., Server], pages: Callable[..., Page], how: str) -> None:
    """The connection drops without a Close frame while the page has not
    read what the server sent and what the page sent last is lost in
    flight. The session goes away (same ``Client``, ``is_away``, not
    connected, ``on_client_closed`` not run); ``send()`` and ``publish()``
    meanwhile queue. The page resumes with its counts, gets ``resumed``
    with the server's count and then exactly the messages after its own
    count, and sends again those after the server's: twice over, every
    number arrives exactly once, in order, both ways. ``on_open`` ran
    once, ``on_resumed`` once per resume."""
    server, recorder, page, client = open_page(make_server, pages)
    session = session_of(client)
    sent = 0

    def server_sends(count: int, via_publish: bool = False) -> None:
        nonlocal sent
        for _ in range(count):
            sent += 1
            data = f"s{sent}"
            assert (server.publish(data) if via_publish else client.send(data)) is True

    page_sent = 0

    def page_sends(count: int) -> None:
        nonlocal page_sent
        for _ in range(count):
            page_sent += 1
            page.send(f"p{page_sent}")

    for cycle in range(2):
        server_sends(5)
        page_sends(5)
        page.until(lambda: page.received == sent and len(recorder.got(client)) == page_sent, "both sides to have everything")
        # What the page will never read, and what the server may or may not read.
        server_sends(3, via_publish=True)
        pump_until(server, lambda: client.buffered_amount == 0, what="the server's messages on the wire")
        page_sends(2)
        page.lose_network()
        page_sends(2)  # lost in flight
        read_before_drop = page.received
        drop_and_wait(page, client, how)
        assert client.is_away is True and client.is_connected is False and client.writable is False
        assert server.client(client.id) is client and recorder.closed == Counter()
        assert client.close_code is None
        # While away: both ways, the messages wait.
        server_sends(2)
        server_sends(2, via_publish=True)
        assert client.buffered_amount == session.replay_bytes > 0
        page_sends(1)
        held_by_server = session.received
        assert held_by_server <= page_sent - 3, "the server had messages the page never got through"
        hello = page.connect()
        assert hello == {"type": "resumed", "received": held_by_server}
        assert session.received == held_by_server
        assert page.ws is not None and client.remote_address[:2] == page.ws.socket.getsockname()[:2], "the client's address is the new connection's"
        assert client.request.query["wsserver-received"] == str(read_before_drop)
        page.until(lambda: page.received == sent and len(recorder.got(client)) == page_sent, "both sides to have everything after the resume")
        data_after_resume = [f for f in page.frames[-1][1:] if not (isinstance(f, str) and f.startswith("!"))]
        assert data_after_resume == [prefixed(d) for d in numbered("s", read_before_drop + 1, sent)], "the replay is not exactly what the page missed"
        assert recorder.resumed == [client] * (cycle + 1)

    assert page.got == numbered("s", 1, sent)
    assert recorder.got(client) == numbered("p", 1, page_sent)
    assert recorder.opened == [client] and recorder.failed == [] and recorder.closed == Counter()
    assert client.is_connected and not client.is_away and server.client(client.id) is client
    assert page.sessions == 1 and page.failures == []
    stop_and_check(server, recorder)


PAGES_IN_CHAOS = 4
CHAOS_STEPS = 400


@pytest.mark.parametrize("seed", range(6))
def test_random_drops_and_resumes_of_several_pages_lose_nothing(make_server: Callable[..., Server], pages: Callable[..., Page], seed: int) -> None:
    """Several pages, a few hundred random steps: the server sends to one
    page or publishes to all, pages send, connections drop in every way a
    network drops them (a reset, a FIN, messages lost in flight, a drop
    the server has not noticed when the page comes back) and pages resume
    whenever they like, with messages crossing both ways all the while
    and the server polled in between. At the end every page has every
    message the server accepted for it, and the server every message of
    every page, each exactly once and in order; each page kept its one
    session, ``on_resumed`` ran once per resume, nothing failed or closed."""
    rng = random.Random(seed)
    server = make_server(resume=ResumePolicy())
    recorder = ResumeRecorder(server)
    group = [pages(server) for _ in range(PAGES_IN_CHAOS)]
    for page in group:
        assert page.connect()["type"] == "session"
    clients = list(recorder.opened)
    for_page: list[list[Data]] = [[] for _ in group]  # what the server accepted for each page
    resumes = 0
    for step in range(CHAOS_STEPS):
        i = rng.randrange(len(group))
        page, client = group[i], clients[i]
        action = rng.choices(["send", "send large", "publish", "page sends", "drop", "resume"], weights=[4, 1, 2, 4, 1, 2])[0]
        if action == "send":
            assert client.send(f"s{step}") is True
            for_page[i].append(f"s{step}")
        elif action == "send large":  # written over several turns: a drop may cut it
            large = step.to_bytes(4, "big") * 50_000
            assert client.send(large) is True
            for_page[i].append(large)
        elif action == "publish":
            assert server.publish(f"all{step}") is True
            for expected in for_page:
                expected.append(f"all{step}")
        elif action == "page sends":
            page.send(f"p{step}")
        elif action == "drop" and page.ws is not None:
            how = rng.choice(["reset", "fin", "lost in flight", "unnoticed"])
            if how == "unnoticed":
                page.forget()
            else:
                if how == "lost in flight":
                    page.lose_network()
                    page.send(f"p{step}")
                page.drop("fin" if how == "fin" else "reset")
        elif action == "resume" and page.ws is None:
            assert page.connect() == {"type": "resumed", "received": session_of(client).received}
            resumes += 1
        server.poll(0)
        for each in group:
            each.take()

    for page in group:
        if page.ws is None:
            assert page.connect()["type"] == "resumed"
            resumes += 1

    def everything_arrived() -> bool:
        for each in group:
            each.take()
        return all(len(page.got) == len(expected) and len(recorder.got(client)) == len(page.outbox) for page, client, expected in zip(group, clients, for_page))

    pump_until(server, everything_arrived, what="every message, both ways")
    for page, client, expected in zip(group, clients, for_page):
        assert page.got == expected
        assert recorder.got(client) == page.outbox
        assert page.sessions == 1 and page.failures == []
        assert client.is_connected and server.client(client.id) is client
    assert recorder.opened == clients and len(recorder.resumed) == resumes
    assert recorder.failed == [] and recorder.closed == Counter()
    stop_and_check(server, recorder)


# -- 3. acknowledgements -----------------------------------------------------------


def test_acks_release_the_replay_buffer_both_ways(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """The server keeps what it sent until the page acknowledges it
    (``!{"type":"ack","received":n}``), and lets go of exactly that much.
    It acknowledges the page's messages itself after ``ackEvery`` of them,
    and a smaller number after ``ACK_DELAY`` (a timer armed when the
    message arrived, seen from ``on_message``), not at once."""
    policy = ResumePolicy(max_messages=8)
    assert policy.ack_every == 2
    server = make_server(resume=policy)
    recorder = ResumeRecorder(server)
    seen: list[tuple[Data, int, bool]] = []

    def on_message(client: Client, message: Message) -> None:
        session = session_of(client)
        seen.append((message.data, session._acknowledged, session._ack_timer is not None))
        recorder._on_message(client, message)

    server.on_message = on_message
    page = pages(server, auto_ack=False)
    page.connect()
    client = recorder.opened[0]
    session = session_of(client)

    for n in range(1, 7):
        client.send(f"s{n}")
    page.until(lambda: page.received == 6, "six messages")
    assert len(session.replay) == 6 and session.first_held == 1
    full = session.replay_bytes
    assert full == 6 * (2 + len(".s1"))

    page.received = 4  # acknowledge only the first four
    page.ack()
    page.received = 6
    pump_until(server, lambda: len(session.replay) == 2, what="the ack of four")
    assert session.first_held == 5 and session.replay_bytes == full // 3
    page.ack()
    pump_until(server, lambda: not session.replay, what="the ack of six")
    assert session.replay_bytes == 0 and session.first_held == 7

    page.send("p1")
    page.send("p2")
    page.until(lambda: {"type": "ack", "received": 2} in page.controls, "the server's ack after ackEvery messages")
    assert page.first_held == 3
    page.send("p3")
    page.until(lambda: {"type": "ack", "received": 3} in page.controls, "the server's ack of one message, on its timer")
    assert page.first_held == 4
    assert seen == [("p1", 0, True), ("p2", 2, False), ("p3", 2, True)], "p2 was acknowledged at once, p3 on a timer"
    assert ACK_DELAY <= 0.25
    stop_and_check(server, recorder)


def test_a_resume_acknowledges_what_the_page_has(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """A resume's ``wsserver-received`` acknowledges too: the server lets go
    of what the page says it has."""
    server, recorder, page, client = open_page(make_server, pages, ResumePolicy(max_messages=100))
    session = session_of(client)
    for n in range(1, 11):
        client.send(f"s{n}")
    page.until(lambda: page.received == 10, "ten messages")
    assert len(session.replay) == 10
    drop_and_wait(page, client)
    page.connect()
    pump_until(server, lambda: not session.replay, what="the resume to release what the page had")
    assert session.first_held == 11 and session.replay_bytes == 0
    stop_and_check(server, recorder)


def test_a_long_replay_is_paced_and_what_is_sent_meanwhile_follows_it(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """Resuming with more kept messages than a turn sends
    (``REPLAY_PER_TURN``), the replay goes on across turns; ``on_resumed``
    runs while it does, and what is sent then queues behind it: the page
    gets every message once, in order."""
    server, recorder, page, client = open_page(make_server, pages)
    session = session_of(client)
    during: list[tuple[bool, int]] = []

    def on_resumed(resumed: Client) -> None:
        during.append((session.replaying, session._next))
        resumed.send("sent in on_resumed")

    server.on_resumed = on_resumed
    drop_and_wait(page, client)
    total = 5 * REPLAY_PER_TURN
    for n in range(1, total + 1):
        assert server.publish(f"s{n}") is True
    assert page.connect() == {"type": "resumed", "received": 0}
    # A turn's worth at most was handed to the connection when on_resumed ran.
    assert len(during) == 1 and during[0][0] is True and 2 <= during[0][1] <= REPLAY_PER_TURN + 1, during
    client.send("sent after the resume")
    page.until(lambda: page.received == total + 2, "the replay and what followed it")
    assert page.got == [*numbered("s", 1, total), "sent in on_resumed", "sent after the resume"]
    assert not session.replaying
    stop_and_check(server, recorder)


def test_max_away_bounds_the_sessions_kept_away(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """With ``max_away`` sessions away, a further drop ends its session
    (``on_client_closed``, 1006) instead of keeping it; the one kept away
    still resumes, the other's resume gets a new session."""
    server = make_server(resume=ResumePolicy(max_away=1))
    recorder = ResumeRecorder(server)
    first, second = pages(server), pages(server)
    first.connect()
    second.connect()
    kept, ended = recorder.opened
    drop_and_wait(first, kept)
    second.drop()
    pump_until(server, lambda: recorder.closed[ended.id] == 1, what="the second drop to end its session")
    assert ended.close_code == 1006 and not ended.is_away and second.token not in server._context.sessions
    assert kept.is_away and recorder.closed[kept.id] == 0
    assert second.connect()["type"] == "session" and second.failures == ["the session is unknown or has ended"]
    assert first.connect() == {"type": "resumed", "received": 0}
    assert recorder.resumed == [kept]
    stop_and_check(server, recorder)


# -- 4. how a session ends -------------------------------------------------------------


@dataclass
class Ending:
    """One way a session ends, and the close status the server records."""

    policy: ResumePolicy
    end: Callable[[Server, ResumeRecorder, Page, Client], None]
    code: int
    reason: str


def page_closes(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    page.close(1000, "bye")
    pump_until(server, lambda: recorder.closed[client.id] == 1, what="on_client_closed")


def server_closes(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    client.close(1000, "done")
    page.until(lambda: recorder.closed[client.id] == 1 and page.ws is None, "the closing handshake")
    assert page.ended == (1000, "done")


def server_closes_while_away(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    drop_and_wait(page, client)
    client.close(1000, "done")
    assert recorder.closed[client.id] == 1, "an away session ends at once"


def away_too_long(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    drop_and_wait(page, client)
    pump_until(server, lambda: recorder.closed[client.id] == 1, what="the away timeout")


def overflow(send: Callable[[Server, Client, str], bool]) -> Callable[[Server, ResumeRecorder, Page, Client], None]:
    """Five messages of 5 bytes (``.sN`` and a 2-byte header) fit in the
    policy's limit, the sixth passes it."""

    def end(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
        drop_and_wait(page, client)
        taken = [send(server, client, f"s{n}") for n in range(2, 8)]
        assert taken == [True] * 5 + [False], "the message that passes the limit is refused"
        assert recorder.closed[client.id] == 1
        assert any(c is client and isinstance(e, BufferError) for c, e in recorder.errors), "on_error was not told why"

    return end


def overflow_while_connected(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    """A page that does not acknowledge: the sixth unacknowledged message
    closes its connection with 1008, and the session ends with it."""
    page.auto_ack = False
    taken = [client.send(f"s{n}") for n in range(2, 8)]
    assert taken == [True] * 5 + [False], "the message that passes max_messages is refused"
    page.until(lambda: recorder.closed[client.id] == 1 and page.ws is None, "the closing handshake")
    assert page.ended is not None and page.ended[0] == 1008
    assert page.got == numbered("s", 1, 6)
    assert any(c is client and isinstance(e, BufferError) for c, e in recorder.errors), "on_error was not told why"


def server_stops(server: Server, recorder: ResumeRecorder, page: Page, client: Client) -> None:
    drop_and_wait(page, client)
    when: list[str] = []
    server.before_stop = lambda: when.append(f"before_stop {recorder.closed[client.id]}")
    server.on_stopped = lambda: when.append(f"on_stopped {recorder.closed[client.id]}")
    server.stop()
    assert when == ["before_stop 0", "on_stopped 1"], "on_client_closed ran during the stop"
    server.before_stop = server.on_stopped = None
    server.start("127.0.0.1", 0)


ENDINGS = {
    "page closes 1000": Ending(ResumePolicy(), page_closes, 1000, "bye"),
    "server closes": Ending(ResumePolicy(), server_closes, 1000, "done"),
    "server closes while away": Ending(ResumePolicy(), server_closes_while_away, 1000, "done"),
    "away too long": Ending(ResumePolicy(away_timeout=0.2), away_too_long, 1006, "away for longer than 0.2 s"),
    "publish overflows while away": Ending(ResumePolicy(max_messages=5), overflow(lambda s, c, data: s.publish(data)), 1008, "replay buffer full while away"),
    "send overflows while away": Ending(ResumePolicy(max_messages=5), overflow(lambda s, c, data: c.send(data)), 1008, "replay buffer full while away"),
    "publish passes max_bytes while away": Ending(ResumePolicy(max_bytes=25), overflow(lambda s, c, data: s.publish(data)), 1008, "replay buffer full while away"),
    "send overflows while connected": Ending(ResumePolicy(max_messages=5), overflow_while_connected, 1008, "replay buffer full"),
    "server stops": Ending(ResumePolicy(), server_stops, 1001, "server stopping"),
}


@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_a_session_ends_once_and_a_later_resume_gets_a_new_one(make_server: Callable[..., Server], pages: Callable[..., Page], ending: Ending) -> None:
    """Each way a session ends runs ``on_client_closed`` exactly once with
    its close status, and forgets the token: a page that then asks to
    resume gets a new session whose ``session`` message says
    ``resumeFailed``, and the server runs ``on_resume_failed(new_client,
    reason)`` before ``on_open``."""
    server, recorder, page, client = open_page(make_server, pages, ending.policy)
    session = session_of(client)
    token = session.token
    client.send("s1")
    page.until(lambda: page.received == 1, "a message")
    if page.acknowledged < page.received:
        page.ack()
    pump_until(server, lambda: not session.replay, what="the ack")  # every ending starts with nothing held
    ending.end(server, recorder, page, client)
    assert recorder.closed[client.id] == 1
    assert (client.close_code, client.close_reason) == (ending.code, ending.reason)
    assert client.is_closed and not client.is_away and not client.is_connected
    assert token not in server._context.sessions and server.client(client.id) is None
    assert client.send("too late") is False and server.publish("too late", to=[client]) is True

    if page.ws is not None:
        page.drop()
    hello = page.connect()
    assert hello["type"] == "session" and hello["token"] != token
    assert page.failures == ["the session is unknown or has ended"]
    new = recorder.opened[-1]
    assert new is not client and new.id != client.id
    assert recorder.failed == [(new, "the session is unknown or has ended")]
    assert recorder.log[-2:] == [("resume failed", new.id), ("open", new.id)]
    assert recorder.closed[client.id] == 1 and recorder.resumed == []
    stop_and_check(server, recorder)


def server_closes_the_dead_page(server: Server, client: Client, dead: socket.socket) -> None:
    client.close(1000, "done")


def dead_page_breaks_the_protocol(server: Server, client: Client, dead: socket.socket) -> None:
    dead.sendall(client_frame(Opcode.TEXT, b"no prefix"))
    pump_until(server, lambda: client.close_code == 1008, what="the server to close the connection for its message")


UNANSWERED = {"client.close()": server_closes_the_dead_page, "a protocol error": dead_page_breaks_the_protocol}


@pytest.mark.parametrize("closing", list(UNANSWERED.values()), ids=list(UNANSWERED))
def test_a_resume_after_the_server_closed_the_session_fails_even_when_the_close_was_not_answered(
    make_server: Callable[..., Server], pages: Callable[..., Page], closing: Callable[[Server, Client, socket.socket], None]
) -> None:
    """The server ends the session (``client.close()``, or a 1008 for a
    message outside the protocol) but the page's side of the connection is
    already dead, so nobody answers the Close frame, and the page comes
    back with a resume before ``close_timeout``. That resume must fail (a
    new session, ``resumeFailed``), and the session the server closed must
    end (``on_client_closed``), not come back as a session that is
    connected but takes no message and never closes."""
    server = make_server(resume=ResumePolicy(), close_timeout=1.0)
    recorder = ResumeRecorder(server)
    local = server.get_local_ip()
    assert local is not None
    with socket.create_connection(local) as dead:  # never read, and written to only by `closing`
        dead.sendall(handshake_request("/?wsserver-resume=new"))
        pump_until(server, lambda: recorder.opened, what="the raw page's upgrade")
        client = recorder.opened[0]
        token = session_of(client).token
        closing(server, client, dead)
        page = pages(server)
        hello = page.connect(page.url(token=token, received=0, first=1))
        resumed, connected, taken = len(recorder.resumed), client.is_connected, client.send("after the close")
        assert hello["type"] == "session", (
            f"the page resumed a session the server had closed: it got {hello}, on_resumed ran {resumed} time(s), client.is_connected is {connected}, and client.send() returns {taken}"
        )
        assert page.failures and recorder.resumed == []
        page.until(lambda: recorder.closed[client.id] == 1, "the closed session to end", timeout=3.0)
    stop_and_check(server, recorder)


def test_a_silent_page_goes_away_on_the_heartbeat_timeout_and_resumes(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """A page that stops answering pings is dropped by the heartbeat's
    timeout: its session goes away (not ended), keeps what is sent, and
    resumes."""
    server = make_server(resume=ResumePolicy(), heartbeat_interval=0.1, heartbeat_timeout=0.1)
    recorder = ResumeRecorder(server)
    local = server.get_local_ip()
    assert local is not None
    with socket.create_connection(local) as silent:  # never read nor answers
        silent.sendall(handshake_request("/?wsserver-resume=new"))
        pump_until(server, lambda: recorder.opened, what="the raw page's upgrade")
        client = recorder.opened[0]
        token = session_of(client).token
        client.send("s1")
        pump_until(server, lambda: client.is_away, what="the heartbeat timeout")
        assert recorder.closed == Counter() and client.close_code is None
        assert any(c is client and isinstance(e, TimeoutError) for c, e in recorder.errors)
        client.send("s2")
    page = pages(server)
    assert page.connect(page.url(token=token, received=0, first=1)) == {"type": "resumed", "received": 0}
    page.until(lambda: page.got == ["s1", "s2"], "what the silent page missed")
    assert recorder.resumed == [client] and recorder.opened == [client]
    stop_and_check(server, recorder)


def test_a_resume_refused_by_on_upgrade_to_websocket_ends_the_session(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """A resume passes ``on_upgrade_to_websocket`` again, with the
    session's own ``Client``: refused there (a revoked device), the page
    gets the refusal's status and the session ends (1008)."""
    server, recorder, page, client = open_page(make_server, pages)
    asked: list[Client] = []

    def hook(asking: Client, request: Request, response: UpgradeResponse, subprotocols: list[str], origin: str | None) -> None:
        asked.append(asking)
        response.error_status(403, "revoked")

    server.on_upgrade_to_websocket = hook
    drop_and_wait(page, client)
    assert refused_status(server, page.url()) == 403
    assert asked == [client]
    assert recorder.closed[client.id] == 1 and client.close_code == 1008 and "on_upgrade_to_websocket" in client.close_reason
    assert page.token not in server._context.sessions and recorder.resumed == []
    stop_and_check(server, recorder)


def test_a_session_ended_by_the_upgrade_hook_is_not_resumed(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """``on_upgrade_to_websocket`` ends the session it is asked to resume
    (``client.close()``): the upgrade gets 409, the session ends once, and
    the page's next attempt starts a new session, told why."""
    server, recorder, page, client = open_page(make_server, pages)
    server.on_upgrade_to_websocket = lambda asking, request, response, subprotocols, origin: asking.close(1000, "signed out")
    drop_and_wait(page, client)
    assert refused_status(server, page.url()) == 409
    assert recorder.closed[client.id] == 1 and (client.close_code, client.close_reason) == (1000, "signed out")
    server.on_upgrade_to_websocket = None
    hello = page.connect()
    assert hello["type"] == "session" and hello["resumeFailed"] == "the session is unknown or has ended"
    assert recorder.resumed == [] and recorder.closed[client.id] == 1
    stop_and_check(server, recorder)


def test_a_close_frame_sent_with_send_data_ends_the_session(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """A Close frame the program sends itself (``send_data``) means to end
    the session, as ``close()`` does: the page's echo (1001 here) does not
    leave it away."""
    server, recorder, page, client = open_page(make_server, pages)
    assert server.send_data(client, b"\x03\xe9", Opcode.CLOSE)
    pump_until(server, lambda: recorder.closed[client.id] == 1, what="the session to end")
    assert not client.is_away and client.close_code == 1001
    stop_and_check(server, recorder)


# -- 5. Going Away -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1001, CLOSE_TO_RESUME], ids=["going away", "close to resume"])
def test_a_page_closing_with_going_away_keeps_its_session(make_server: Callable[..., Server], pages: Callable[..., Page], code: int) -> None:
    """Close 1001 (a page put in the back-forward cache) or 4001 (a page
    that gave up a connection it found dead) leaves the session away, not
    ended: what is sent meanwhile waits, and the page resumes."""
    server, recorder, page, client = open_page(make_server, pages)
    page.close(code, "")
    pump_until(server, lambda: client.is_away, what="the session to go away")
    assert recorder.closed == Counter() and client.close_code is None
    assert [closed for c, closed, _ in recorder.closes if c is client] == [code]
    client.send("s1")
    page.send("p1")
    assert page.connect() == {"type": "resumed", "received": 0}
    page.until(lambda: page.got == ["s1"] and recorder.got(client) == ["p1"], "both messages")
    assert recorder.resumed == [client] and recorder.opened == [client]
    stop_and_check(server, recorder)


# -- 6. gaps -----------------------------------------------------------------------------------


def gap_lower_than_held(server: Server, page: Page, client: Client) -> tuple[int, int]:
    for n in range(1, 5):
        client.send(f"s{n}")
    page.until(lambda: page.received == 4, "four messages")
    page.ack()
    pump_until(server, lambda: session_of(client).first_held == 5, what="the ack")
    return 2, page.first_held


def gap_first_too_far(server: Server, page: Page, client: Client) -> tuple[int, int]:
    page.send("p1")
    page.send("p2")
    pump_until(server, lambda: session_of(client).received == 2, what="two messages")
    return 0, 4


def gap_received_more_than_sent(server: Server, page: Page, client: Client) -> tuple[int, int]:
    client.send("s1")
    client.send("s2")
    page.until(lambda: page.received == 2, "two messages")
    return 5, 1


GAPS = {
    "received lower than held": (gap_lower_than_held, "messages 3 to 4 the page missed are no longer held"),
    "first past the server's count": (gap_first_too_far, "the page no longer holds its messages 3 to 3"),
    "received more than sent": (gap_received_more_than_sent, "the page counts 5 messages from the server, which sent 2"),
}


@pytest.mark.parametrize(("make_gap", "reason"), list(GAPS.values()), ids=list(GAPS))
def test_a_resume_across_a_gap_fails_on_both_sides(make_server: Callable[..., Server], pages: Callable[..., Page], make_gap: Callable[[Server, Page, Client], tuple[int, int]], reason: str) -> None:
    """A resume whose counts leave a gap that neither side can fill (the
    server let go of what the page says it missed, the page of what the
    server missed, or the page counts more than was sent) ends the old
    session (``on_client_closed``, 1008) and starts a new one, both sides
    told why."""
    server, recorder, page, client = open_page(make_server, pages)
    received, first = make_gap(server, page, client)
    token = page.token
    drop_and_wait(page, client)
    hello = page.connect(page.url(received=received, first=first))
    assert hello["type"] == "session" and hello["resumeFailed"] == reason
    assert recorder.closed[client.id] == 1 and client.close_code == 1008 and reason in client.close_reason
    assert token not in server._context.sessions
    new = recorder.opened[-1]
    assert new is not client and recorder.failed == [(new, reason)]
    assert recorder.log[-3:] == [("closed", client.id), ("resume failed", new.id), ("open", new.id)]
    stop_and_check(server, recorder)


# -- 7. binding ------------------------------------------------------------------------------------


SESSIONS_KEY = b"k" * 32


def cookie(user: str) -> dict[str, str]:
    value = Sessions(SESSIONS_KEY).cookie(Session({"user": user})).value
    return {"Cookie": f"wsserver_session={value}"}


BINDINGS = {
    "another origin": ({"origin": "http://a.example"}, {"origin": "http://b.example"}, False),
    "no session cookie": ({"headers": cookie("ann")}, {}, True),
    "another session cookie": ({"headers": cookie("ann")}, {"headers": cookie("bob")}, True),
}


@pytest.mark.parametrize(("own", "other", "signed"), list(BINDINGS.values()), ids=list(BINDINGS))
def test_a_resume_from_another_page_is_refused_and_leaves_the_session(make_server: Callable[..., Server], pages: Callable[..., Page], own: dict[str, Any], other: dict[str, Any], signed: bool) -> None:
    """A resume must come from the ``Origin`` and with the signed session
    (``http_server.sessions``) of the connect that made the token. Another
    page's attempt with the token gets a new session (``resumeFailed``:
    it belongs to another page), and the session itself is not ended by
    it: its own page then resumes it."""
    server = make_server(resume=ResumePolicy(), origins=["http://a.example", "http://b.example"])
    if signed:
        server.http_server.sessions = Sessions(SESSIONS_KEY)
    recorder = ResumeRecorder(server)
    page = pages(server, **own)
    page.connect()
    client = recorder.opened[0]
    client.send("s1")
    page.until(lambda: page.received == 1, "a message")
    drop_and_wait(page, client)

    intruder = pages(server, **other)
    hello = intruder.connect(intruder.url(token=page.token, received=1, first=1))
    assert hello["type"] == "session" and hello["resumeFailed"] == "the session belongs to another page"
    assert client.is_away and recorder.closed[client.id] == 0 and page.token in server._context.sessions
    assert recorder.failed == [(recorder.opened[-1], "the session belongs to another page")]

    client.send("s2")
    assert page.connect() == {"type": "resumed", "received": 0}
    page.until(lambda: page.got == ["s1", "s2"], "the message sent while away")
    assert recorder.resumed == [client]
    stop_and_check(server, recorder)


# -- 8. bad input -------------------------------------------------------------------------------------


BAD_MESSAGES: dict[str, Data] = {
    "text without a prefix": "hello",
    "binary without a prefix": b"hello",
    "binary control message": b'!{"type":"ack","received":0}',
    "control that is not JSON": "!{ack",
    "control that is a list": "![1]",
    "control without received": '!{"type":"ack"}',
    "unknown control": '!{"type":"nack","received":0}',
    "received that is not an int": '!{"type":"ack","received":1.0}',
    "ack of more than was sent": '!{"type":"ack","received":3}',
    "ack going back": '!{"type":"ack","received":0}',
    "control too long to be one": '!{"type":"ack","received":0,"pad":"' + "x" * 300 + '"}',
    "control nested past the parser's stack": "!" + "[" * 100_000,
}


@pytest.mark.parametrize("bad", list(BAD_MESSAGES.values()), ids=list(BAD_MESSAGES))
def test_a_message_outside_the_protocol_ends_the_session_with_1008(harness: Callable[..., Harness], pages: Callable[..., Page], bad: Data) -> None:
    """A resumable connection that breaks the protocol is closed with 1008
    and its session ends (``on_client_closed`` once); another resumable
    page and a plain client (the harness's) go on working, and nothing
    escapes ``poll()``."""
    h = harness(resume=ResumePolicy())
    offender, bystander = pages(h.server, auto_ack=False), pages(h.server)
    offender.connect()
    client = h.recorder.opened[-1]
    bystander.connect()
    for n in range(1, 3):
        client.send(f"s{n}")
    offender.until(lambda: offender.received == 2, "two messages")
    offender.received = 1
    offender.ack()  # the server holds 2 from here on
    pump_until(h.server, lambda: session_of(client).first_held == 2, what="the ack")
    token = offender.token

    offender.send_raw(bad)
    offender.until(lambda: offender.ws is None, "the server to close the connection")
    assert offender.ended is not None and offender.ended[0] == 1008
    assert h.recorder.closed[client.id] == 1 and client.close_code == 1008
    assert token not in h.server._context.sessions
    assert any(c is client for c, _ in h.recorder.errors), "on_error was not told why"

    bystander.send("still here")
    bystander.until(lambda: bystander.got == ["still here"], "the bystander's echo")
    h.keeps_working()
    bystander.close()
    h.finish()


@pytest.mark.parametrize(
    "query",
    [
        "wsserver-resume=abc",
        "wsserver-resume=abc&wsserver-received=1",
        "wsserver-resume=abc&wsserver-first=1",
        "wsserver-resume=abc&wsserver-received=x&wsserver-first=1",
        "wsserver-resume=abc&wsserver-received=-1&wsserver-first=1",
        "wsserver-resume=abc&wsserver-received=0&wsserver-first=0",
        "wsserver-resume=&wsserver-received=0&wsserver-first=1",
    ],
)
def test_a_malformed_resume_query_is_refused_with_400(make_server: Callable[..., Server], query: str) -> None:
    """A resume that does not name its token and both counts, or names
    counts out of range, is refused before the upgrade: HTTP 400."""
    server = make_server(resume=ResumePolicy())
    recorder = ResumeRecorder(server)
    assert refused_status(server, ws_url(server, "/?" + query)) == 400
    assert recorder.opened == [] and server._context.sessions == {} and server.client_count() == 0


# -- 9. plain clients ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "query"),
    [({"resume": ResumePolicy()}, ""), ({}, "?wsserver-resume=new")],
    ids=["plain client, resume server", "resume client, plain server"],
)
def test_a_connection_without_both_sides_asking_for_resume_is_plain(make_server: Callable[..., Server], options: dict[str, Any], query: str) -> None:
    """Without ``wsserver-resume``, a client of a resumable server gets no
    session message and no prefixes; a client that asks for a session of a
    server without ``resume`` gets a plain connection (its first message is
    the application's)."""
    server = make_server(**options)
    recorder = ResumeRecorder(server, echo=True)

    def on_open(client: Client) -> None:
        recorder._on_open(client)
        client.send("welcome")

    server.on_open = on_open
    url = ws_url(server, "/" + query)

    def client() -> list[Data]:
        with connect(url, proxy=None, open_timeout=DEADLINE, close_timeout=DEADLINE) as ws:
            got: list[Data] = [ws.recv(timeout=DEADLINE)]
            ws.send("plain")
            got.append(ws.recv(timeout=DEADLINE))
            ws.send(b"\x01")
            got.append(ws.recv(timeout=DEADLINE))
        return got

    assert run_client(server, client) == ["welcome", "plain", b"\x01"]
    assert recorder.got(recorder.opened[0]) == ["plain", b"\x01"]
    assert not isinstance(recorder.opened[0]._state, ResumableSession)
    assert server._context.sessions == {} and recorder.failed == [] and recorder.resumed == []
    pump_until(server, recorder.all_closed, what="the plain client's close")
    recorder.check_invariants()


# -- 10. raw frames -------------------------------------------------------------------------------------


def test_send_data_refuses_data_frames_on_a_resumable_session_and_passes_pings(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """``send_data()`` of a data frame would bypass the numbering: it
    raises ``ValueError`` (connected or away). A Ping passes when
    connected, and the numbering is untouched by either."""
    server, recorder, page, client = open_page(make_server, pages)
    for opcode, data in ((Opcode.BINARY, b"x"), (Opcode.TEXT, "x"), (Opcode.CONTINUATION, b"x")):
        with pytest.raises(ValueError, match="send_data"):
            server.send_data(client, data, opcode)
    with pytest.raises(ValueError):
        client.send_data(b"x", Opcode.BINARY, fin=False)
    assert server.send_data(client, b"are you there", Opcode.PING) is True
    assert client.send("s1") is True
    page.until(lambda: page.got == ["s1"], "the message after the ping")
    assert page.frames[0][1:] == [".s1"] and session_of(client).sent == 1

    drop_and_wait(page, client)
    with pytest.raises(ValueError):
        server.send_data(client, b"x")
    assert server.send_data(client, b"", Opcode.PING) is False
    assert session_of(client).sent == 1
    stop_and_check(server, recorder)


# -- 11. an unnoticed drop ---------------------------------------------------------------------------------


def test_a_resume_while_the_server_still_holds_the_old_connection_moves_the_session(make_server: Callable[..., Server], pages: Callable[..., Page]) -> None:
    """The server never noticed the drop: the old connection is still open
    (and never read again by the page) when the page resumes on a new one.
    The server drops the old connection, the session goes on on the new
    one, nothing is lost or repeated, ``on_client_closed`` does not run."""
    server, recorder, page, client = open_page(make_server, pages)
    for n in range(1, 4):
        client.send(f"s{n}")
        page.send(f"p{n}")
    page.until(lambda: page.received == 3 and len(recorder.got(client)) == 3, "three messages each way")
    client.send("s4")
    server.publish("s5")
    page.send("p4")
    pump_until(server, lambda: len(recorder.got(client)) == 4 and client.buffered_amount == 0, what="p4, and s4 and s5 on the wire")
    old = page.forget()
    page.send("p5")
    server.publish("s6")
    assert client.is_connected and not client.is_away and server.connection_count() == 1

    assert page.connect() == {"type": "resumed", "received": 4}
    page.until(lambda: page.received == 6 and len(recorder.got(client)) == 5, "everything after the resume")

    def old_is_dropped() -> bool:
        for _ in range(100):  # let go of what it had (the page never takes it), until its end
            try:
                old.recv(timeout=0)
            except TimeoutError:
                return False
            except ConnectionClosed:
                return True
        return False

    pump_until(server, old_is_dropped, what="the old connection to be dropped")
    assert old.close_code == 1006, "the old connection is dropped, not closed"
    assert page.got == numbered("s", 1, 6) and recorder.got(client) == numbered("p", 1, 5)
    assert recorder.opened == [client] and recorder.resumed == [client] and recorder.closed == Counter()
    driver = session_of(client).driver
    assert server.connection_count() == 1 and client.is_connected and driver is not None and not driver.stream.closed
    stop_and_check(server, recorder)


# -- 12. fragments -----------------------------------------------------------------------------------------


def test_on_fragment_cannot_be_used_with_resume() -> None:
    """Resumable sessions number whole messages: ``start()`` refuses a
    server that would hand out fragments."""
    server = Server(resume=ResumePolicy())
    server.on_fragment = lambda client, fragment: None
    try:
        with pytest.raises(ValueError, match="on_fragment"):
            server.start("127.0.0.1", 0)
        assert not server.started
    finally:
        server.shutdown()


# -- 13. memory ----------------------------------------------------------------------------------------------


SESSIONS = 1000
PUBLISHED = 5000


def test_memory_of_a_thousand_away_sessions_under_a_publish_loop(make_server: Callable[..., Server]) -> None:
    """1,000 resumable clients connect (raw sockets, hand-written
    handshake) and drop without a Close frame; then 5,000 messages of 100
    bytes are published. Each session keeps within its limits all along;
    the 1,025th message passes ``max_messages`` and ends every session
    (1008, ``on_client_closed`` once each; ``publish()`` says False).

    Measured with ``tracemalloc`` when every session holds its 1,024
    messages: publish() makes each prefixed frame once and every session
    keeps a reference to it, so an away session costs its deque of
    references (8 bytes each, in blocks of 64) and not a copy of the
    messages. Measured here (CPython 3.11): 8,924 bytes per away session
    at 1,024 messages each, 8.7 bytes per message held, the 1,024 shared
    frames included; a copy of each frame per session would cost at least
    136 bytes per message (a bytes object holding the 103-byte frame).
    Once the sessions end, the memory is let go.
    """
    raise_open_file_limit(2 * SESSIONS + 256)
    # away_timeout: however slow the machine, no session ends before the overflow.
    policy = ResumePolicy(max_messages=1024, max_bytes=1024 * 1024, away_timeout=600.0, max_away=SESSIONS)
    server = make_server(resume=policy, max_connections=SESSIONS + 100)
    opened: list[Client] = []
    closed: Counter[int] = Counter()
    errors: Counter[type] = Counter()
    server.on_open = opened.append
    server.on_client_closed = lambda client: closed.update([client.id])
    server.on_error = lambda client, exc: errors.update([type(exc)])
    local = server.get_local_ip()
    assert local is not None
    request = handshake_request("/?wsserver-resume=new")
    socks: list[socket.socket] = []

    def batch_open() -> bool:
        return len(opened) == len(socks)

    try:
        for _ in range(SESSIONS // 100):  # in batches, within the listen backlog
            batch = [socket.create_connection(local, timeout=DEADLINE) for _ in range(100)]
            for sock in batch:
                sock.sendall(request)
            socks.extend(batch)
            pump_until(server, batch_open, what="a batch of handshakes")
        sessions = list(server._context.sessions.values())
        assert len(sessions) == SESSIONS
        for sock in socks:  # a reset: no Close frame, no FIN handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        pump_until(server, lambda: server.connection_count() == 0 and all(s.is_away for s in sessions), what="every session away")
    finally:
        for sock in socks:
            sock.close()
    assert closed == Counter() and errors == Counter()

    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        started = time.monotonic()
        for n in range(1, policy.max_messages + 2):
            taken = server.publish(f"{n:05d}" + "x" * 95)
            assert taken is (n <= policy.max_messages), f"publish #{n} returned {taken}"
            if n % 128 == 0:
                assert all(len(s.replay) == n <= policy.max_messages and s.replay_bytes == n * 103 <= policy.max_bytes for s in sessions)
            if n == policy.max_messages:
                full = tracemalloc.get_traced_memory()[0] - baseline
        # The message that would pass max_messages ended every session.
        assert all(s.ended and not s.replay and s.replay_bytes == 0 for s in sessions)
        assert server._context.sessions == {} and server.client_count() == 0
        sessions.clear()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    for n in range(policy.max_messages + 2, PUBLISHED + 1):  # the rest of the loop: nobody left to keep them
        assert server.publish(f"{n:05d}" + "x" * 95) is True
    elapsed = time.monotonic() - started

    per_session = full / SESSIONS
    print(
        f"\n{SESSIONS} away sessions holding {policy.max_messages} messages each: {full} bytes, {per_session:.0f} bytes per away session "
        f"({per_session / policy.max_messages:.2f} per message held); {after} bytes left after they ended; {PUBLISHED} publishes in {elapsed:.2f} s"
    )
    assert len(closed) == SESSIONS and set(closed.values()) == {1}
    assert all(client.close_code == 1008 for client in opened)
    assert errors == Counter({BufferError: SESSIONS})
    # The design's bound: per session, a reference per message (8 bytes,
    # plus the deque's block links: 528 bytes per 64); shared by all of
    # them, each message once (its prefixed frame: objects and ~100 bytes).
    references = SESSIONS * policy.max_messages * 9
    shared = policy.max_messages * 1024
    assert full <= references + shared, f"{per_session:.0f} bytes per away session: more than references to shared messages"
    assert after <= 512 * 1024, f"{after} bytes still held after every session ended"


@pytest.mark.slow
def test_a_thousand_pages_resuming_at_once_each_get_exactly_their_replay() -> None:
    """``bench/resume_storm.py``, smaller: 1,000 sessions drop at once
    (a reset each, as when a Wi-Fi access point restarts), 100 messages are
    published, and every page comes back at once. Each gets ``resumed``
    and then exactly those 100 messages, in order, and no session ends."""
    result = load_program("bench/resume_storm.py").resume_storm(sessions=SESSIONS, messages=100, deadline=120.0)
    print(result.summary())
    assert result.problems == [] and result.ended == 0
