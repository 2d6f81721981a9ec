"""The JavaScript client (/wsserver-rpc.js) in headless Chromium, against
wsserver.rpc: the page calls the program, the program calls the page and
surveys it, errors reach both sides with their codes, and the client comes
back by itself after the connection drops."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import Worker, pump_until
from wsserver import Client, Server
from wsserver.rpc import CONNECTION_CLOSED, METHOD_NOT_FOUND, Deferred, JsonRpc, RpcError

PAGE = """<!doctype html><meta charset="utf-8"><title>Panel</title>
<script src="/wsserver-rpc.js"></script>"""

# The page: call the program, expose functions to it, then wait until the
# program calls page.finish() and hand back what it said.
CALLS = """(async () => {
  const rpc = await WsRpc.connect(undefined, {minDelay: 50, maxDelay: 200});
  window.rpc = rpc;
  rpc.expose({page: {
    title: () => document.title,
    add: (a, b) => a + b,
    later: (value) => new Promise((resolve) => setTimeout(() => resolve(value), 20)),
    fail: () => { const error = new Error("no such tab"); error.code = 12; error.data = {tab: 3}; throw error; },
    crash: () => { throw new TypeError("undefined is not a function"); },
    finish: (summary) => { window.finish(summary); return "bye"; },
  }});
  const finished = new Promise((resolve) => { window.finish = resolve; });
  const outcome = {};
  outcome.positional = await rpc.call("subtract", 42, 23);
  outcome.named = await rpc.callNamed("subtract", {subtrahend: 23, minuend: 42});
  for (const [name, call] of [["missing", () => rpc.call("missing")], ["refused", () => rpc.call("refuse", "/x")]]) {
    try { await call(); } catch (error) {
      outcome[name] = {isError: error instanceof WsRpcError, code: error.code, message: error.message, data: error.data ?? null};
    }
  }
  // In flight when the program drops the connection: rejected, since whether it ran is unknown.
  const dropped = rpc.call("hang").then(() => "answered", (error) => error.code);
  let opens = 0;
  rpc.onopen = () => { opens += 1; };
  await rpc.call("ready");
  outcome.dropped = await dropped;
  // Back by itself; a call made now waits for the connection.
  outcome.afterReconnect = await rpc.call("subtract", 1, 2);
  outcome.opens = opens;
  await rpc.call("ready");
  outcome.summary = await finished;
  return outcome;
})()"""


def test_the_page_and_the_program_call_each_other(server: Server, tmp_path: Path) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    errors: list[tuple[Client | None, BaseException]] = []
    server.on_error = lambda client, exc: errors.append((client, exc))
    server.http_server.route("/", handler=lambda request: PAGE)
    rpc = JsonRpc(server)
    ready: list[Client] = []
    hanging: list[Deferred] = []

    @rpc.method
    def subtract(minuend: int, subtrahend: int) -> int:
        return minuend - subtrahend

    @rpc.method
    def refuse(path: str) -> None:
        raise RpcError(4004, "No such file", {"path": path})

    @rpc.method
    def hang() -> Deferred:
        hanging.append(Deferred())
        return hanging[-1]

    @rpc.method("ready")
    def is_ready(*, client: Client) -> None:
        ready.append(client)

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            return browser.evaluate(browser.open(str(server.http_server.get_url())), CALLS)

    browser = Worker(browse)
    browser.start()
    pump_until(server, lambda: ready and hanging, 60.0, "the page to call")
    # Drop the connection with a call pending each way: both end, once.
    first = ready[0]
    ours: list[Any] = []
    rpc.call(first, "page.later", "x", on_result=ours.append, on_error=ours.append, timeout=None)
    server.close(first, 1012, "restarting")
    pump_until(server, lambda: len(ready) == 2, 60.0, "the page to come back")
    assert [error.code for error in ours] == [CONNECTION_CLOSED] and hanging[0].cancelled
    page = ready[1]
    assert page.id != first.id and rpc.clients() == [page]

    answers: dict[str, Any] = {}

    def keep(name: str) -> Any:
        return lambda outcome: answers.__setitem__(name, outcome)

    rpc.survey("page.title", on_result=lambda client, title: answers.__setitem__("title", (client.id, title)))
    for name, params in (("page.add", (2, 3)), ("page.later", ("late",)), ("page.fail", ()), ("page.crash", ()), ("page.missing", ())):
        rpc.call(page, name, *params, on_result=keep(name), on_error=keep(name))
    pump_until(server, lambda: len(answers) == 6, 60.0, "the page's answers")
    assert answers["title"] == (page.id, "Panel")
    assert answers["page.add"] == 5 and answers["page.later"] == "late"
    fail, crash, missing = answers["page.fail"], answers["page.crash"], answers["page.missing"]
    assert (fail.code, fail.message, fail.data) == (12, "no such tab", {"tab": 3})
    assert crash.code == -32603 and "undefined is not a function" in crash.message
    assert missing.code == METHOD_NOT_FOUND

    rpc.call(page, "page.finish", {"seen": sorted(answers)})
    pump_until(server, lambda: not browser.is_alive(), 60.0, "the page to finish")
    outcome = browser.outcome()
    assert outcome == {
        "positional": 19,
        "named": 19,
        "missing": {"isError": True, "code": METHOD_NOT_FOUND, "message": "Method not found", "data": None},
        "refused": {"isError": True, "code": 4004, "message": "No such file", "data": {"path": "/x"}},
        "dropped": CONNECTION_CLOSED,
        "afterReconnect": -1,
        "opens": 1,
        "summary": {"seen": sorted(answers)},
    }
    assert errors == []


# A page that reconnects only when woken: its backoff is a minute long.
WAKEFUL = """(async () => {
  const rpc = await WsRpc.connect(undefined, {pingTimeout: 300, minDelay: 60000, maxDelay: 60000});
  window.rpc = rpc;
  window.events = [];
  rpc.onopen = () => events.push("open");
  rpc.onclose = (event) => events.push("close " + event.code);
  await rpc.call("ready");
})()"""

# Once woken: wait for the new connection, then call through it.
AFTER_WAKING = """(async () => {
  while (!events.includes("open")) await new Promise((resolve) => setTimeout(resolve, 10));
  return {events, answer: await rpc.call("subtract", 5, 3), online: navigator.onLine};
})()"""


def test_a_page_that_wakes_up_finds_a_dead_socket_and_reconnects_at_once(server: Server, tmp_path: Path) -> None:
    """A frozen page thawed (Page.setWebLifecycleState, as a phone that
    slept) pings the program; a socket that does not answer is given up and
    a new one opened at once. And a page waiting out its backoff reconnects
    as soon as the browser says it is online again."""
    from chromium import AVAILABLE, Chromium
    from tcprelay import Relay

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server.http_server.route("/", handler=lambda request: PAGE)
    local = server.get_local_ip()
    assert local is not None
    relay = Relay(local)  # the page reaches the server through it
    rpc = JsonRpc(server, {"subtract": lambda minuend, subtrahend: minuend - subtrahend})
    ready: list[Client] = []
    rpc.methods.add("ready", lambda *, client: ready.append(client))
    connected, silenced, thawed_, closed = (threading.Event() for _ in range(4))

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(f"http://127.0.0.1:{relay.port}/")
            browser.evaluate(session, WAKEFUL)
            connected.set()
            assert silenced.wait(60.0)  # the test thread makes the server stop answering
            browser.call("Page.setWebLifecycleState", session, state="frozen")
            browser.call("Page.setWebLifecycleState", session, state="active")
            thawed = browser.evaluate(session, AFTER_WAKING)
            browser.evaluate(session, "events.length = 0")
            thawed_.set()
            assert closed.wait(60.0)  # the program closed the connection: the page waits out its minute
            browser.call("Network.enable", session)
            browser.call("Network.emulateNetworkConditions", session, offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
            browser.call("Network.emulateNetworkConditions", session, offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1)
            return thawed, browser.evaluate(session, AFTER_WAKING)

    page = Worker(browse)
    page.start()
    try:
        pump_until(server, lambda: connected.is_set() and ready, 60.0, "the page to connect")
        # The connection stays open at both ends, but nothing passes: a socket that died unnoticed.
        relay.silence()
        silenced.set()
        # (Chromium may also close a page's sockets when it freezes it: then the old one is gone already.)
        pump_until(server, lambda: thawed_.is_set() and rpc.clients()[-1] is not ready[0], 60.0, "the thawed page to reconnect")
        current = rpc.clients()[-1]
        relay.cut_silent()
        server.close(current, 1012, "restarting")
        pump_until(server, lambda: rpc.clients() == [], 60.0, "the connections to end")
        closed.set()
        pump_until(server, lambda: not page.is_alive(), 60.0, "the page to come back online")
    finally:
        silenced.set()
        closed.set()
        relay.close()
    thawed, online = page.outcome()
    assert thawed == {"events": ["close 1006", "open"], "answer": 2, "online": True}
    assert online == {"events": ["close 1012", "open"], "answer": 2, "online": True}
