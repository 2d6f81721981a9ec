"""A real browser end to end: headless Chromium loads a page from
``http_server``, and the page's own script talks back to the same port
over WebSocket (text, binary, a ``publish``, a large text compressed by
permessage-deflate), Server-Sent Events and a JSON route. Then the built-in chat page of ``python -m wsserver``, clicked
like a person would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chromium import AVAILABLE, Chromium
from conftest import Recorder, pump_until, run_client
from wsserver import Client, Message, Server
from wsserver.__main__ import build_server
from wsserver.http import Request
from wsserver.http.sse import EventStream

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="chromium is not installed (bash .ci/run installs the Debian package)")

DEADLINE = 60.0  # a cold browser start on a shared 2-core machine

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>end to end</title>
<script>
"use strict";
// Each step starts when the previous answer arrived: no timers, no guessing.
window.outcome = new Promise((resolve, reject) => {
  const result = {};
  const ws = new WebSocket(`ws://${location.host}/chat?room=e2e`);
  // JSON-like text of about 1 MiB, for a compressed round trip.
  const large = "large:" + JSON.stringify(Array.from({ length: 20000 }, (_, i) => ({ row: i, name: `item ${i}`, on: i % 2 === 0 })));
  ws.binaryType = "arraybuffer";
  ws.onerror = () => reject(new Error("websocket error"));
  ws.onopen = () => { result.extensions = ws.extensions; ws.send("hello from chromium"); };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      result.binary = Array.from(new Uint8Array(event.data));
      ws.send("publish please");
    } else if (event.data.startsWith("echo:")) {
      result.text = event.data;
      ws.send(new Uint8Array([0, 1, 2, 127, 128, 255]));
    } else if (event.data.startsWith("large:")) {
      result.large = event.data === large;
      streamEvents();
    } else {
      result.published = event.data;
      ws.send(large);
    }
  };
  function streamEvents() {
    const source = new EventSource("/events");
    source.addEventListener("greeting", (event) => {
      result.sse = { data: event.data, id: event.lastEventId };
      source.close();
      fetch("/api/state?from=page", { method: "POST", body: JSON.stringify(result) })
        .then((response) => response.json())
        .then((state) => { result.api = state; ws.close(1000, "done"); });
    });
  }
  ws.onclose = (event) => {
    result.close = [event.code, event.reason, event.wasClean];
    resolve(result);
  };
});
</script>
<p>end to end</p>
"""



def page_outcome(server: Server, recorder: Recorder, tmp_path: Path) -> tuple[Any, str]:
    """Start ``server``, open its page in headless Chromium, and return the
    page's ``window.outcome`` once its socket has closed, and the page's URL;
    stops the server."""
    server.start("127.0.0.1", 0)
    url = server.http_server.get_url("/")

    def browse() -> Any:
        with Chromium(tmp_path / "profile", DEADLINE) as browser:
            session = browser.open(url)
            return browser.evaluate(session, "window.outcome")

    try:
        outcome = run_client(server, browse, timeout=DEADLINE * 2)
        pump_until(server, recorder.all_closed, what="the page's socket to close")
    finally:
        server.stop()
    return outcome, url

def test_a_page_talks_back_over_websocket_sse_and_fetch(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    server = Server(root=site)
    recorder = Recorder(server)
    posted: list[Any] = []

    def on_message(client: Client, message: Message) -> None:
        recorder.messages.append((client, message))
        if message.data == "publish please":
            server.publish(f"published to {server.client_count()} client(s)")
        elif isinstance(message.data, str) and message.data.startswith("large:"):
            client.send(message.data)
        elif isinstance(message.data, bytes):
            client.send(bytes(reversed(message.data)))
        else:
            client.send("echo:" + message.data)

    server.on_message = on_message

    @server.http_server.route("/events")
    def events(request: Request) -> EventStream:
        stream = EventStream()
        stream.send("hi from the server", event="greeting", id="1")
        return stream

    @server.http_server.route("/api/state", methods=("POST",))
    def state(request: Request) -> dict:
        posted.append(json.loads(request.body))
        return {"from": request.query["from"], "clients": server.client_count()}

    outcome, url = page_outcome(server, recorder, tmp_path)
    assert outcome == {
        # Chromium offers permessage-deflate and gets it by default; a
        # large text message went both ways compressed.
        "extensions": "permessage-deflate; client_no_context_takeover",
        "large": True,
        "text": "echo:hello from chromium",
        "binary": [255, 128, 127, 2, 1, 0],
        "published": "published to 1 client(s)",
        "sse": {"data": "hi from the server", "id": "1"},
        "api": {"from": "page", "clients": 1},
        "close": [1000, "", True],  # the server echoes the code of the page's Close frame
    }
    assert posted[0]["text"] == "echo:hello from chromium"
    (client,) = recorder.opened
    assert client.request.path == "/chat" and client.request.query == {"room": "e2e"}
    assert client.request.headers["Origin"] == url.rstrip("/")
    assert [(code, reason) for _, code, reason in recorder.closes] == [(1000, "done")]
    assert client.close_code == 1000
    assert [m.data for _, m in recorder.messages][:3] == ["hello from chromium", bytes([0, 1, 2, 127, 128, 255]), "publish please"]
    assert client.extensions == "permessage-deflate; client_no_context_takeover"
    recorder.check_invariants()


# The built-in page: wait until it says "connected", type, press Send, and
# wait for the echo to show in its log.
CHAT = """
new Promise((resolve) => {
  const state = document.getElementById("state");
  const log = document.getElementById("log");
  const send = (text, binary) => {
    document.getElementById("text").value = text;
    document.getElementById("binary").checked = binary;
    document.getElementById("send").click();
  };
  const incoming = () => Array.from(log.querySelectorAll("li.in")).map((li) => li.textContent);
  const step = () => {
    const seen = incoming();
    if (state.className === "open" && seen.length === 0 && log.querySelectorAll("li.out").length === 0) send("hello page", false);
    if (seen.length === 1 && log.querySelectorAll("li.out").length === 1) send("bytes too", true);
    if (seen.length === 2) { observer.disconnect(); resolve({ state: state.textContent, seen }); }
  };
  const observer = new MutationObserver(step);
  observer.observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  step();
})
"""


def test_the_builtin_chat_page_echoes_what_is_typed(tmp_path: Path) -> None:
    server = build_server(broadcast=False)
    server.start("127.0.0.1", 0)

    def browse() -> Any:
        with Chromium(tmp_path / "profile", DEADLINE) as browser:
            session = browser.open(server.http_server.get_url())
            return browser.evaluate(session, CHAT)

    try:
        outcome = run_client(server, browse, timeout=DEADLINE * 2)
    finally:
        server.stop()
    assert outcome == {"state": "connected", "seen": ["texthello page", "binary9 bytes: bytes too"]}


# The scenario of the "no silent loss" issue, from a real browser: the page
# sends a 4 MiB text message; the server echoes it (which alone puts the
# page over the default write_limit) and, in the same callback, publishes
# "status". Once the page has the echo it says so and the server closes it:
# what the page received before the Close frame is everything it will get.
BIG_ECHO_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>big echo</title>
<script>
"use strict";
window.outcome = new Promise((resolve, reject) => {
  const big = "0123456789abcdef".repeat(262144);  // 4 MiB of ASCII
  const received = [];
  const ws = new WebSocket(`ws://${location.host}/big`);
  ws.onerror = () => reject(new Error("websocket error"));
  ws.onopen = () => ws.send(big);
  ws.onmessage = (event) => {
    const data = event.data;
    if (data === big) received.push("the 4 MiB echo, intact");
    else if (data.length <= 100) received.push(data);
    else received.push(`${data.length} characters, not the echo`);
    if (received.length === 1) ws.send("got the echo");
  };
  ws.onclose = (event) => resolve({ received, close: [event.code, event.reason, event.wasClean] });
});
</script>
<p>big echo</p>
"""

BIG = "0123456789abcdef" * (4 * 1024 * 1024 // 16)


def test_a_publish_after_a_big_echo_reaches_the_page_after_it(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(BIG_ECHO_PAGE)
    server = Server(root=site)  # default limits
    recorder = Recorder(server)
    returned: list[tuple[bool, bool]] = []

    def on_message(client: Client, message: Message) -> None:
        recorder.messages.append((client, message))
        if message.data == "got the echo":
            client.close(1000, "bye")
        else:
            returned.append((client.send(message.data), server.publish("status")))

    server.on_message = on_message
    outcome, url = page_outcome(server, recorder, tmp_path)
    assert outcome == {"received": ["the 4 MiB echo, intact", "status"], "close": [1000, "bye", True]}
    assert returned == [(True, True)], "send() or publish() did not take the message for an open client"
    first, second = (m.data for _, m in recorder.messages)
    assert first == BIG and second == "got the echo"
    (client,) = recorder.opened
    assert client.close_code == 1000
    recorder.check_invariants()
