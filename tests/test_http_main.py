"""``python -m wsserver`` serves pages on the WebSocket's port: the
built-in chat page by default, or a directory with ``--root``."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from conftest import DEADLINE


def start(*args: str) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    ws_line, page_line = process.stdout.readline(), process.stdout.readline()  # blocks until printed
    if not page_line.startswith("Page:"):
        process.kill()
        pytest.fail(f"unexpected output {ws_line!r} {page_line!r}: {process.stderr.read() if process.stderr else ''}")
    return process, ws_line.split()[-1], page_line.split()[-1]


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(DEADLINE)


def test_the_builtin_page_is_served_at_the_root() -> None:
    process, ws_url, page_url = start()
    try:
        assert page_url == ws_url.replace("ws://", "http://")
        with urllib.request.urlopen(page_url, timeout=DEADLINE) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "new WebSocket(" in page and "location.host" in page
        assert "http://" not in page and "https://" not in page  # no external resources
        with connect(ws_url) as ws:  # and the WebSocket on the same port
            ws.send("still echoing")
            assert ws.recv(timeout=DEADLINE) == "still echoing"
    finally:
        assert stop(process) == 0


def test_root_serves_a_directory(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>my site</p>")
    (tmp_path / "data.txt").write_text("data")
    process, _, page_url = start("--root", str(tmp_path))
    try:
        with urllib.request.urlopen(page_url, timeout=DEADLINE) as response:
            assert response.read() == b"<p>my site</p>"
        with urllib.request.urlopen(page_url + "data.txt", timeout=DEADLINE) as response:
            assert response.read() == b"data"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(page_url + "index.js", timeout=DEADLINE)
        assert missing.value.code == 404
    finally:
        assert stop(process) == 0


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "--port", "0", "--root", str(tmp_path / "nope")], capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2 and "not a directory" in result.stderr
