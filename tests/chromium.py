"""Headless Chromium driven over the DevTools protocol (CDP), for tests
that need a real browser: open a page, wait for its load, evaluate script
(awaiting promises) and read back JSON values.

Everything blocks with a deadline; call it from a worker thread while the
test thread pumps the server.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
AVAILABLE = os.path.exists(CHROMIUM)

# Headless, no sandbox (root in CI), and nothing that talks to the network
# behind the test's back (this machine has none).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
    "--remote-debugging-port=0",
]


class Chromium:
    """One headless browser process and a CDP connection to it."""

    def __init__(self, profile: Path, timeout: float, flags: tuple[str, ...] = ()) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._endpoint: str | None = None
        self._listening = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._listening.wait(timeout) or self._endpoint is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(self.log[-20:]))
        self._ids = itertools.count(1)
        self._events: list[dict] = []
        self._connection = contextlib.ExitStack()
        self.cdp: ClientConnection = self._connection.enter_context(connect(self._endpoint, max_size=None, open_timeout=timeout))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # read to the end, so the pipe never fills
            self.log.append(line)
            if line.startswith("DevTools listening on "):
                self._endpoint = line.split(" ", 3)[3].strip()
                self._listening.set()
        self._listening.set()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send a command and return its result, skipping events meanwhile."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.cdp.send(json.dumps(message))
        while True:
            reply = json.loads(self.cdp.recv(timeout=self.timeout))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self._events.append(reply)  # kept for wait_event()

    def wait_event(self, name: str, session: str) -> dict:
        """The parameters of the first event ``name`` of the session, even
        one that arrived while a command was waiting for its reply."""
        while True:
            event = self._events.pop(0) if self._events else json.loads(self.cdp.recv(timeout=self.timeout))
            if event.get("method") == name and event.get("sessionId") == session:
                return event["params"]

    def open(self, url: str) -> str:
        """Open ``url`` in a new tab and wait for its load event; the tab's session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The JSON value of ``expression`` in the page, awaiting a promise."""
        result = self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True, timeout=self.timeout * 1000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            if getattr(self, "cdp", None) is not None:
                with self._connection:
                    try:
                        self.call("Browser.close")
                    except Exception:
                        pass  # the browser may drop the connection before it answers
        finally:
            try:
                self.process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(self.timeout)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
