"""Session resume with a real browser: headless Chromium runs
/wsserver-rpc.js with ``{resume: true}`` while the program publishes
numbered messages and the page sends numbered messages. The connection
breaks the ways a phone's does (a drop with messages lost in flight, a page
frozen and thawed over a connection that died unnoticed, the browser
offline for 5 s), and both sides must end with every number exactly once,
in order. A gap older than the replay buffer is reported on both sides.

The page reaches the server through :class:`tcprelay.Relay`, which can go
silent: what is in flight then is lost, as on a network that changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Worker, pump_until
from wsserver import Client, Message, Server
from wsserver.resume import ResumePolicy
from wsserver.rpc import JsonRpc

PAGE = """<!doctype html><meta charset="utf-8"><title>Resume</title>
<script src="/wsserver-rpc.js"></script>"""

#: Messages each side sends in a scenario.
TOTAL = 400

# The page: a resumable session that records what arrives and what
# happens, and sends p1..pN, one every 2 ms while it runs.
START = """(async () => {
  window.got = [];
  window.events = [];
  window.sent = 0;
  const rpc = await WsRpc.connect(undefined, Object.assign({resume: true, minDelay: 50, maxDelay: 200, pingTimeout: 300}, %s));
  window.rpc = rpc;
  events.push("open");
  rpc.onopen = () => events.push("open");
  rpc.onclose = (event) => events.push("close " + event.code);
  rpc.onresumed = () => events.push("resumed");
  rpc.onresumefailed = (reason) => events.push("resume failed: " + reason);
  rpc.onmessage = (data) => got.push(data);
  const send = () => { if (sent < %d) { rpc.send("p" + ++sent); setTimeout(send, 2); } };
  send();
})()"""

# Wait until the page has everything, then report.
FINISH = """(async () => {
  while (got.length < %d || sent < %d) await new Promise((resolve) => setTimeout(resolve, 10));
  return {got, events};
})()"""

EVENTS = """(async () => {
  while (!events.some((event) => event.startsWith("%s"))) await new Promise((resolve) => setTimeout(resolve, 10));
  return events;
})()"""


def numbers(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n}" for n in range(1, count + 1)]


class Scenario:
    """A resumable server, a page through a relay, and the program's side
    of the traffic: from the page's first message on, a timer publishes
    s1..sN every 4 ms (about the page's own pace)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.received: list[str] = []
        self.published = 0
        self.opened: list[Client] = []
        self.resumed: list[Client] = []
        self.closed: list[Client] = []
        self.failed: list[tuple[Client, str]] = []
        self.errors: list[tuple[Client | None, BaseException]] = []
        server.on_open = self.opened.append
        server.on_resumed = self.resumed.append
        server.on_client_closed = self.closed.append
        server.on_resume_failed = lambda client, reason: self.failed.append((client, reason))
        server.on_message = self._on_message
        server.on_error = lambda client, exc: self.errors.append((client, exc))
        server.http_server.route("/", handler=lambda request: PAGE)
        JsonRpc(server)  # the page's wake-up check calls rpc.ping
        local = server.get_local_ip()
        assert local is not None
        from tcprelay import Relay

        self.relay = Relay(local)

    def _on_message(self, client: Client, message: Message) -> None:
        self.received.append(str(message.data))
        if len(self.received) == 1:
            self._publish_every(0.004)

    def publish_one(self) -> None:
        if self.published < TOTAL:
            self.published += 1
            self.server.publish(f"s{self.published}")

    def _publish_every(self, interval: float) -> None:
        def tick() -> None:
            if self.published < TOTAL:
                self.publish_one()
                self.server.reactor.call_later(interval, tick)

        tick()

    def pump(self, condition: Callable[[], Any], what: str) -> None:
        pump_until(self.server, condition, 60.0, what)

    def session(self) -> Any:
        """The server's side of the page's session."""
        assert len(self.opened) == 1
        return self.opened[0]._state

    def drop_from_the_server(self) -> None:
        """End the page's TCP connection at the server, without a Close frame."""
        driver = self.session().driver
        assert driver is not None
        driver.stream.abort(ConnectionResetError("the network changed"))


@pytest.fixture
def scenario(make_server: Callable[..., Server]) -> Iterator[Scenario]:
    from chromium import AVAILABLE

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    made = Scenario(make_server(resume=ResumePolicy(max_messages=TOTAL * 2)))
    yield made
    made.relay.close()


def run_page(scenario: Scenario, tmp_path: Path, steps: Callable[[Any, str], Any], options: str = "{}") -> Worker:
    """Open the page through the relay in Chromium, start it (its client
    made with ``options`` besides the defaults), and run
    ``steps(browser, session)`` on the browser's thread."""
    from chromium import Chromium

    def browse() -> Any:
        # A thawed page stays hidden, and a hidden page's timers would run
        # once a second: the page's pace is the test's, not the browser's.
        with Chromium(tmp_path / "profile", 60.0, flags=("--disable-background-timer-throttling",)) as browser:
            session = browser.open(f"http://127.0.0.1:{scenario.relay.port}/")
            browser.evaluate(session, START % (options, TOTAL))
            return steps(browser, session)

    worker = Worker(browse)
    worker.start()
    return worker


def assert_nothing_lost(scenario: Scenario, outcome: dict[str, Any]) -> None:
    assert scenario.received == numbers("p", TOTAL), "the program missed or repeated some of the page's messages"
    assert outcome["got"] == numbers("s", TOTAL), "the page missed or repeated some of the program's messages"
    assert len(scenario.opened) == 1 and scenario.closed == [] and scenario.failed == []


def test_a_drop_with_messages_lost_in_flight_loses_nothing(scenario: Scenario, tmp_path: Path) -> None:
    """Mid-traffic the relay goes silent (what both sides send then is
    lost), and the server ends the TCP connection without a Close frame:
    the page reconnects, resumes, and each side gets what it missed."""
    page = run_page(scenario, tmp_path, lambda browser, session: browser.evaluate(session, FINISH % (TOTAL, TOTAL)))
    scenario.pump(lambda: len(scenario.received) >= 50, "traffic both ways")
    scenario.relay.silence()
    lost_from = scenario.published
    scenario.pump(lambda: scenario.published >= lost_from + 40, "messages sent into the silence")
    client = scenario.opened[0]
    scenario.drop_from_the_server()
    assert client.is_away and not client.is_connected and scenario.closed == []
    scenario.relay.cut_silent()  # the page's end of the connection dies too
    scenario.pump(lambda: scenario.resumed, "the page to resume")
    assert scenario.resumed == [client] and not client.is_away
    scenario.pump(lambda: not page.is_alive(), "every message")
    outcome = page.outcome()
    assert_nothing_lost(scenario, outcome)
    assert outcome["events"] == ["open", "close 1006", "open", "resumed"]
    assert scenario.errors == []


def test_a_page_frozen_over_a_dead_connection_resumes_when_thawed(scenario: Scenario, tmp_path: Path) -> None:
    """The page is frozen (Page.setWebLifecycleState, as a phone that
    sleeps) and its connection dies unnoticed while the program goes on
    publishing. Thawed, the page finds its socket dead (rpc.ping), opens a
    new one and resumes: the server drops the old connection, which it
    still held, and nothing is lost or repeated."""
    frozen, thaw = threading.Event(), threading.Event()

    def steps(browser: Any, session: str) -> Any:
        browser.evaluate(session, "new Promise((resolve) => { const wait = () => got.length >= 50 ? resolve() : setTimeout(wait, 10); wait(); })")
        browser.call("Page.setWebLifecycleState", session, state="frozen")
        frozen.set()
        assert thaw.wait(60.0)
        browser.call("Page.setWebLifecycleState", session, state="active")
        return browser.evaluate(session, FINISH % (TOTAL, TOTAL))

    page = run_page(scenario, tmp_path, steps)
    try:
        scenario.pump(frozen.is_set, "the page to be frozen")
        scenario.relay.silence()  # the connection dies, unnoticed at both ends
        held = scenario.session().driver
        silent_from = scenario.published
        scenario.pump(lambda: scenario.published >= silent_from + 40, "messages sent while the page sleeps")
    finally:
        thaw.set()
    scenario.pump(lambda: scenario.resumed, "the page to resume")
    # The relay never told the server the old connection died: the resume did.
    assert held.stream.closed and scenario.session().driver not in (held, None)
    scenario.pump(lambda: not page.is_alive(), "every message")
    outcome = page.outcome()
    assert_nothing_lost(scenario, outcome)
    assert len(scenario.resumed) == 1
    assert outcome["events"][-2:] == ["open", "resumed"]
    assert scenario.errors == []


def test_five_seconds_offline_repeat_nothing(scenario: Scenario, tmp_path: Path) -> None:
    """The browser goes offline for 5 s and back (Chromium keeps open
    WebSockets through it, so this checks that the page's offline/online
    handling, a wake-up check, repeats and loses nothing)."""
    offline, online = threading.Event(), threading.Event()

    def steps(browser: Any, session: str) -> Any:
        browser.call("Network.enable", session)
        browser.call("Network.emulateNetworkConditions", session, offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        offline.set()
        assert online.wait(60.0)
        browser.call("Network.emulateNetworkConditions", session, offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        return browser.evaluate(session, FINISH % (TOTAL, TOTAL))

    page = run_page(scenario, tmp_path, steps)
    try:
        scenario.pump(offline.is_set, "the browser to go offline")
        back_at = time.monotonic() + 5.0
        scenario.pump(lambda: time.monotonic() >= back_at, "5 s offline")
    finally:
        online.set()
    scenario.pump(lambda: not page.is_alive(), "every message")
    assert_nothing_lost(scenario, page.outcome())
    assert scenario.errors == []


def test_a_gap_older_than_the_buffer_fails_the_resume_on_both_sides(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """While the page is away the program publishes more than the session
    keeps: the session ends (on_client_closed, 1008), and when the page
    comes back both sides are told the resume failed."""
    from chromium import AVAILABLE

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    scenario = Scenario(make_server(resume=ResumePolicy(max_messages=20)))
    try:
        page = run_page(scenario, tmp_path, lambda browser, session: browser.evaluate(session, EVENTS % "resume failed"))
        scenario.pump(lambda: len(scenario.received) >= 10, "the page to send")
        client = scenario.opened[0]
        scenario.relay.silence()
        scenario.drop_from_the_server()
        for _ in range(21):  # before the page can come back: this thread polls the server
            scenario.publish_one()
        assert scenario.closed == [client] and (client.close_code, client.close_reason) == (1008, "replay buffer full while away")
        scenario.relay.cut_silent()  # the page's end of the connection dies too: it comes back
        scenario.pump(lambda: not page.is_alive(), "the page to be told")
        events = page.outcome()
    finally:
        scenario.relay.close()
    reason = "the session is unknown or has ended"
    assert events[-2:] == ["open", f"resume failed: {reason}"]
    assert len(scenario.opened) == 2 and scenario.failed == [(scenario.opened[1], reason)]
    assert scenario.resumed == []


def test_a_page_that_kept_too_few_of_its_own_fails_the_resume_on_both_sides(scenario: Scenario, tmp_path: Path) -> None:
    """The page keeps at most 5 of its messages unacknowledged
    (``resumeMaxMessages``) and goes on sending while it is away for a
    second: coming back, it no longer holds what the program missed, and
    both sides are told instead of the program skipping them."""
    page = run_page(
        scenario, tmp_path, lambda browser, session: browser.evaluate(session, EVENTS % "resume failed"), "{resumeMaxMessages: 5, minDelay: 2000, maxDelay: 2000}"
    )
    scenario.pump(lambda: len(scenario.received) >= 10, "the page to send")
    client = scenario.opened[0]
    scenario.relay.silence()
    scenario.drop_from_the_server()
    scenario.relay.cut_silent()
    scenario.pump(lambda: not page.is_alive(), "the page to be told")
    events = page.outcome()
    assert events[-2].startswith("open") and events[-1].startswith("resume failed: the page no longer holds its messages")
    assert scenario.closed == [client] and client.close_code == 1008 and client.close_reason.startswith("resume failed: the page no longer holds")
    assert len(scenario.opened) == 2 and [new for new, _ in scenario.failed] == [scenario.opened[1]]
    assert scenario.resumed == []


def test_a_page_asking_a_server_without_resume_is_told_so(make_server: Callable[..., Server], tmp_path: Path) -> None:
    """``{resume: true}`` against a server made without ``resume=``: the
    connection opens but no session starts, so ``connect()`` rejects
    (after ``pingTimeout``) with a reason that names the fix, instead of
    waiting or reconnecting for ever; the server saw a plain client come
    and go."""
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server = make_server()
    server.http_server.route("/", handler=lambda request: PAGE)
    JsonRpc(server)  # serves /wsserver-rpc.js
    closed: list[Client] = []
    server.on_client_closed = closed.append

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(str(server.http_server.get_url()))
            return browser.evaluate(
                session, "WsRpc.connect(undefined, {resume: true, pingTimeout: 300}).then(() => 'connected', (error) => [error.code, error.message])"
            )

    page = Worker(browse)
    page.start()
    pump_until(server, lambda: not page.is_alive(), 60.0, "the page to give up")
    code, message = page.outcome()
    assert code == -32001 and "resume=ResumePolicy()" in message
    assert [client.close_code for client in closed] == [4002]
