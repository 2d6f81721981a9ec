"""examples/rpc_panel.py, run as a user would: a locked page's WebSocket is
refused; once unlocked in headless Chromium, the page lists the folder
through the program and the program reads the page's title."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import load_program, pump_until, run_client, ws_url
from wsserver import Server

UNLOCK_AND_LIST = """(async () => {
  await fetch("/unlock", {method: "POST"});
  location.reload();
})()"""

LISTED = """new Promise((resolve) => {
  const files = document.getElementById("files");
  const check = () => files.textContent ? resolve(files.textContent) : setTimeout(check, 10);
  check();
})"""


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    module = load_program("examples/rpc_panel.py")
    folder = tmp_path / "shared"
    folder.mkdir()
    for name in ("notes.txt", "photo.jpg"):
        (folder / name).write_text(name)
    server = module.make_server(folder)
    server.start("127.0.0.1", 0)
    yield server, folder
    server.shutdown()


def test_a_locked_page_gets_no_websocket(panel: tuple[Server, Path]) -> None:
    server, _ = panel

    def client() -> int:
        try:
            connect(ws_url(server))
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError("a page with no session was let in")

    assert run_client(server, client) == 403


def test_the_panel_round_trip(panel: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server, _ = panel

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(str(server.http_server.get_url()))
            locked = browser.evaluate(session, LISTED)
            browser.evaluate(session, UNLOCK_AND_LIST)
            browser.wait_event("Page.loadEventFired", session)
            return locked, browser.evaluate(session, LISTED)

    locked, listed = run_client(server, browse, timeout=120.0)
    assert (locked, listed) == ("locked", "notes.txt\nphoto.jpg")
    pump_until(server, lambda: "is 'Panel'" in capsys.readouterr().out, what="the program to read the page's title")
