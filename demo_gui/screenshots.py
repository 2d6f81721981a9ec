"""Take the README's screenshots of the demo programs, headless.

    python demo_gui/screenshots.py            # writes docs/demo-tk.png, docs/demo-qt.png, docs/demo-page.png

The Tk window is drawn on a private Xvfb whose screen is read back from its
frame-buffer file; the Qt window renders offscreen and grabs itself; the
chat page is a headless Chromium screenshot taken while the Tk demo serves
it. A short scripted conversation between three clients fills the windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs"
sys.path[:0] = [str(ROOT / "tests")]  # the Xvfb launcher the Tk tests use

from websockets.sync.client import connect  # noqa: E402

CONVERSATION = [
    ("Ana", "Hi! Joining from the laptop"),
    ("Ben", "Phone here, page loads fine over the LAN"),
    ("Chloe", "Can the desktop see us?"),
]
DESKTOP_LINE = "Yes: three of you, and the window stays responsive"
DEADLINE = 20.0


def converse(url: str, done: threading.Event) -> None:
    """Three clients say one line each, in turn; each waits for its own line to come back."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url)) for _ in CONVERSATION]
        for ws, (name, text) in zip(sockets, CONVERSATION):
            ws.send(json.dumps({"name": name, "text": text}))
            while json.loads(ws.recv(timeout=DEADLINE)).get("text") != text:
                pass
        done.set()
        for _ in sockets[0]:  # stay connected until the window closes
            pass


def pump(step: Callable[[], Any], condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screenshots: timed out waiting for {what}")
        step()


def start_room(window: Any) -> None:
    room = window.room
    try:
        room.start("127.0.0.1", 8765)
    except OSError:
        room.start("127.0.0.1", 0)
    window.show_url(room.page_url())


def tk_screenshots() -> None:
    import tkinter

    import tk_demo
    from wsserver.adapters import tk as tk_adapter
    from xvfb import Xvfb

    with tempfile.TemporaryDirectory() as fbdir, Xvfb(size="1024x768x24", fbdir=fbdir):
        root = tkinter.Tk()
        window = tk_demo.TkChatWindow(root)
        start_room(window)
        tk_adapter.attach(window.room.server, root)
        def step() -> None:
            root.after(10, lambda: None)  # client threads cannot wake Tk
            root.tk.dooneevent(0)

        done = threading.Event()
        threading.Thread(target=converse, args=(window.room.server.get_url("chat"), done), daemon=True).start()
        pump(step, done.is_set, "the conversation")
        window.entry.insert(0, DESKTOP_LINE)
        window.publish_button.invoke()
        browser = page_screenshot(window.room.page_url(), DOCS / "demo-page.png")
        pump(step, lambda: browser is None or browser.poll() is not None, "the page screenshot")
        window.tree.selection_set(window.tree.get_children()[1])
        root.update()
        root.winfo_pointerxy()  # a round trip: the X server has drawn everything asked so far
        x, y, width, height = root.winfo_rootx(), root.winfo_rooty(), root.winfo_width(), root.winfo_height()
        write_png(DOCS / "demo-tk.png", *crop_xwd(pathlib.Path(fbdir, "Xvfb_screen0").read_bytes(), x, y, width, height))
        root.destroy()


def page_screenshot(url: str, path: pathlib.Path) -> subprocess.Popen[bytes] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("no Chromium: skipping the page screenshot", file=sys.stderr)
        return None
    profile = tempfile.mkdtemp(prefix="wsserver-shot-")
    return subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--window-size=420,560", "--virtual-time-budget=2000", f"--screenshot={path}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def qt_screenshot() -> None:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    import qt_demo
    from wsserver.adapters import qt as qt_adapter

    app = QApplication([])
    window = qt_demo.QtChatWindow()
    start_room(window)
    qt_adapter.attach(window.room.server)
    window.show()
    ticker = QTimer()
    ticker.start(10)  # client threads cannot wake Qt
    flags = QEventLoop.ProcessEventsFlag.AllEvents | QEventLoop.ProcessEventsFlag.WaitForMoreEvents

    def step() -> None:
        QCoreApplication.processEvents(flags)

    done = threading.Event()
    threading.Thread(target=converse, args=(window.room.server.get_url("chat"), done), daemon=True).start()
    pump(step, done.is_set, "the conversation")
    window.entry.setText(DESKTOP_LINE)
    window.publish_button.click()
    window.tree.topLevelItem(1).setSelected(True)
    for _ in range(5):
        QCoreApplication.processEvents()
    window.grab().save(str(DOCS / "demo-qt.png"))
    window.close()
    app.quit()


def crop_xwd(data: bytes, x: int, y: int, width: int, height: int) -> tuple[int, int, bytes]:
    """The RGB pixels of a rectangle of a 24/32-bit TrueColor XWD screen dump."""
    header = struct.unpack(">25I", data[:100])
    header_size, bits_per_pixel, bytes_per_line, ncolors = header[0], header[11], header[12], header[19]
    if bits_per_pixel != 32 or header[7] != 0:  # byte_order 0: LSBFirst
        raise ValueError("expected a 32-bit little-endian XWD dump")
    pixels = header_size + 12 * ncolors
    rows = []
    for row in range(y, y + height):
        start = pixels + row * bytes_per_line + x * 4
        bgrx = data[start : start + width * 4]
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = bgrx[2::4], bgrx[1::4], bgrx[0::4]
        rows.append(bytes(rgb))
    return width, height, b"".join(rows)


def write_png(path: pathlib.Path, width: int, height: int, rgb: bytes) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    stride = width * 3
    raw = b"".join(b"\0" + rgb[i : i + stride] for i in range(0, len(rgb), stride))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main() -> int:
    DOCS.mkdir(exist_ok=True)
    which = sys.argv[1:] or ["tk", "qt"]
    if "tk" in which:
        tk_screenshots()
    if "qt" in which:
        qt_screenshot()
    for name in ("demo-tk.png", "demo-qt.png", "demo-page.png"):
        if (DOCS / name).exists():
            print(DOCS / name, (DOCS / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
