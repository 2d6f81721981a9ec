"""The Qt adapter on a real QApplication (offscreen platform), with real clients.

Each test drives the Qt event loop itself while ``websockets`` clients run on
threads. A process holds one QApplication, so the bare QCoreApplication case
runs in a child process.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import DEADLINE, Recorder, Worker, count_polls
from demoscenario import demo_pairing_scenario, demo_rpc_scenario, demo_scenario, load_demo
from guiclients import ListeningClient, start_clients, wait_until
from wsserver import Server

os.environ["QT_QPA_PLATFORM"] = "offscreen"
QtCore = pytest.importorskip("PySide6.QtCore", reason="PySide6 is not installed (pip install -e '.[qt]')")
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 has no QtWidgets here")
from wsserver.adapters import qt as qt_adapter  # noqa: E402  (needs PySide6)

QEventLoop, QTimer = QtCore.QEventLoop, QtCore.QTimer


@pytest.fixture(autouse=True)
def both_pollers(poller_path: str) -> str:
    """Every test here runs on the platform's poller and on select() without
    a descriptor, the Windows path (see conftest.poller_path)."""
    return poller_path


@pytest.fixture(scope="session")
def app() -> Any:
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def server(app: Any) -> Iterator[Server]:
    server = Server()
    server.start("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def attach(app: Any) -> Iterator[Callable[..., qt_adapter.QtPump]]:
    """``attach(server, **options)``, detached again after the test."""
    handles: list[qt_adapter.QtPump] = []

    def attach(server: Server, **options: Any) -> qt_adapter.QtPump:
        handles.append(qt_adapter.attach(server, **options))
        return handles[-1]

    yield attach
    for handle in handles:
        handle.detach()


def qt_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> None:
    """Run the Qt loop until ``condition()`` holds. Client threads cannot wake
    Qt, so a 10 ms ticker makes each turn come back to look."""
    ticker = QTimer()
    ticker.start(10)
    flags = QEventLoop.ProcessEventsFlag.AllEvents | QEventLoop.ProcessEventsFlag.WaitForMoreEvents
    try:
        wait_until(lambda: QtCore.QCoreApplication.processEvents(flags), condition, timeout, what)
    finally:
        ticker.stop()


def run_loop_for(seconds: float) -> None:
    """Run a nested event loop for ``seconds`` (it does not emit aboutToQuit)."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def _echo_once(url: str, text: str = "still here") -> str:
    from websockets.sync.client import connect

    with connect(url, open_timeout=DEADLINE) as ws:
        ws.send(text)
        return ws.recv(timeout=DEADLINE)


def test_echo_runs_every_callback_on_the_gui_thread(server: Server, attach: Any) -> None:
    recorder = Recorder(server)
    log = QtWidgets.QListWidget()
    recorded = server.on_message

    def on_message(client: Any, message: Any) -> None:
        recorded(client, message)
        log.addItem(f"{client.id}: {message.data}")
        client.send(message.data)

    server.on_message = on_message
    attach(server)
    workers = [Worker(_echo_once, server.get_url(), f"hello {i}") for i in range(4)]
    for worker in workers:
        worker.start()
    qt_until(lambda: not any(w.is_alive() for w in workers), what="clients to finish")
    assert [w.outcome() for w in workers] == [f"hello {i}" for i in range(4)]
    qt_until(recorder.all_closed, what="every on_client_closed")
    assert log.count() == 4
    assert recorder.thread_ids == {threading.get_ident()}
    recorder.check_invariants()


def test_publish_from_a_button(server: Server, attach: Any) -> None:
    recorder = Recorder(server)
    edit = QtWidgets.QLineEdit("hello from Qt")
    button = QtWidgets.QPushButton("Publish")
    button.clicked.connect(lambda: server.publish(edit.text()))
    attach(server)
    clients = start_clients(server.get_url(), 3)
    qt_until(lambda: len(recorder.opened) == 3, what="3 clients")
    button.click()
    qt_until(lambda: all(c.messages for c in clients), what="the published message")
    assert [c.messages for c in clients] == [["hello from Qt"]] * 3


def test_quitting_the_application_closes_every_client_with_1001(app: Any, server: Server, attach: Any) -> None:
    recorder = Recorder(server)
    port = server.get_local_ip()[1]
    handle = attach(server)
    clients = start_clients(server.get_url(), 5)
    qt_until(lambda: len(recorder.opened) == 5, what="5 clients")

    QTimer.singleShot(0, app.quit)
    app.exec()

    for client in clients:
        client.join(DEADLINE)
        client.check()
    assert [c.close_code for c in clients] == [1001] * 5
    recorder.check_invariants()
    assert recorder.thread_ids == {threading.get_ident()}
    assert not handle.attached and not server.started
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()


def test_a_worker_thread_publishes_10000_messages_in_order(server: Server, attach: Any) -> None:
    recorder = Recorder(server)
    attach(server)
    client = ListeningClient(server.get_url())
    client.start()
    qt_until(lambda: len(recorder.opened) == 1, what="the client")

    def produce() -> None:
        for n in range(10_000):
            server.call_soon_threadsafe(server.publish, str(n))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    qt_until(lambda: len(client.messages) == 10_000, timeout=30, what="10,000 messages")
    producer.join(DEADLINE)
    assert client.messages == [str(n) for n in range(10_000)]


def test_idle_means_no_polls(app: Any, attach: Any) -> None:
    server = Server(heartbeat_interval=None)
    server.start("127.0.0.1", 0)
    recorder = Recorder(server)
    polls = count_polls(server)
    handle = attach(server)
    assert handle.wakeup == ("thread" if server.fileno() is None else "descriptor")
    clients = start_clients(server.get_url(), 5)
    qt_until(lambda: len(recorder.opened) == 5 and all(c.connected.is_set() for c in clients), what="5 clients")
    qt_until(lambda: not server.reactor.has_pending_work())
    before = len(polls)
    run_loop_for(1.0)
    assert len(polls) - before <= 2, f"{len(polls) - before} polls in an idle second"
    waker = handle.waker
    handle.detach()
    assert waker is None or not waker.is_alive(), "the waker thread outlived detach()"
    server.stop()


def test_protocol_deadlines_fire_without_traffic(attach: Any) -> None:
    server = Server(handshake_timeout=0.2)
    server.start("127.0.0.1", 0)
    attach(server)
    silent = socket.create_connection(server.get_local_ip(), timeout=DEADLINE)
    started = time.monotonic()
    closed = threading.Event()
    threading.Thread(target=lambda: (silent.recv(1), closed.set()), daemon=True).start()
    qt_until(closed.is_set, what="the handshake timeout")
    assert 0.19 <= time.monotonic() - started < 5.0
    silent.close()
    server.stop()


def test_timer_pumping_on_request(server: Server, attach: Any) -> None:
    server.on_message = lambda client, message: client.send(message.data)
    handle = attach(server, wakeup="timer")
    assert handle.fd is None
    worker = Worker(_echo_once, server.get_url())
    worker.start()
    qt_until(lambda: not worker.is_alive(), what="the echo")
    assert worker.outcome() == "still here"


CORE_APPLICATION = textwrap.dedent(
    """
    import sys
    from PySide6.QtCore import QCoreApplication
    import wsserver
    from wsserver.adapters import qt

    app = QCoreApplication([])
    server = wsserver.Server()
    closed = []
    server.on_message = lambda client, message: app.quit() if message.data == "quit" else client.send(message.data)
    server.on_client_closed = lambda client: closed.append(client.id)
    server.start("127.0.0.1", 0)
    qt.attach(server)
    print(server.get_url(), flush=True)
    app.exec()
    print("closed", len(closed), "started", server.started, flush=True)
    """
)


def test_a_bare_qcoreapplication(app: Any) -> None:
    """No widgets at all: a console Qt program. Quitting from a callback stops the server."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    child = subprocess.Popen(
        [sys.executable, "-c", CORE_APPLICATION],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        with connect(url, open_timeout=DEADLINE) as ws:
            ws.send("echo me")
            assert ws.recv(timeout=DEADLINE) == "echo me"
            ws.send("quit")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=DEADLINE)
            assert ws.close_code == 1001
        out, _ = child.communicate(timeout=DEADLINE)
        assert out.split() == ["closed", "1", "started", "False"]
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_importing_wsserver_imports_no_gui_toolkit() -> None:
    code = "import sys, wsserver, wsserver.adapters; print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'tkinter', '_tkinter')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE, check=True).stdout
    assert out.strip() == "[]"


# -- the Qt demo program ------------------------------------------------------


class QtDemoDriver:
    """What demo_scenario needs from the Qt demo window."""

    def __init__(self, app: Any, attach: Callable[..., Any], pair: bool = False) -> None:
        self.app = app
        self._attach = attach
        self.window = load_demo("qt_demo").QtChatWindow(pair=pair)
        self.window.show()
        self.room = self.window.room

    def attach(self) -> None:
        self._attach(self.room.server)

    def pump_until(self, condition: Callable[[], Any], what: str) -> None:
        qt_until(condition, what=what)

    def rows(self) -> list[tuple[str, ...]]:
        tree = self.window.tree
        return [tuple(tree.topLevelItem(i).text(c) for c in range(tree.columnCount())) for i in range(tree.topLevelItemCount())]

    def log_text(self) -> str:
        return self.window.log.toPlainText()

    def publish(self, text: str) -> str:
        self.window.entry.setText(text)
        self.window.publish_button.click()
        return self.window.entry.text()

    def close_first_row(self) -> None:
        self.window.tree.topLevelItem(0).setSelected(True)
        self.window.close_button.click()

    def close_window(self) -> None:
        QTimer.singleShot(0, self.window.close)  # the last window: the application quits
        self.app.exec()

    def type_draft(self, text: str) -> None:
        self.window.entry.setText(text)

    def ask_pages(self) -> None:
        self.window.ask_button.click()

    def pairing_link(self) -> str:
        return self.window.pairing_link

    def qr_modules(self) -> list[list[bool]]:
        """Read back from the widget's pixels, one sample in each module's middle."""
        module = load_demo("qt_demo").QR_MODULE
        image = self.window.qr.grab().toImage()
        size = image.width() // module
        return [[image.pixelColor(x * module + module // 2, y * module + module // 2).lightness() < 128 for x in range(size)] for y in range(size)]

    def revoke_first_row(self) -> None:
        self.window.tree.topLevelItem(0).setSelected(True)
        self.window.revoke_button.click()


def test_the_qt_demo(app: Any, attach: Any) -> None:
    demo_scenario(QtDemoDriver(app, attach))


def test_the_qt_demo_pairs_devices_by_qr_code(app: Any, attach: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsserver.http import pairing

    demo_pairing_scenario(QtDemoDriver(app, attach, pair=True), lambda: monkeypatch.setattr(pairing, "_loopback", lambda host: False))


def test_the_qt_demos_rpc_panel(app: Any, attach: Any, tmp_path: Any) -> None:
    from chromium import AVAILABLE

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    demo_rpc_scenario(QtDemoDriver(app, attach), tmp_path / "profile")




def test_a_send_from_a_worker_thread_is_refused_with_the_way_to_hand_it_over(server: Server, attach: Any) -> None:
    recorder = Recorder(server)
    attach(server)
    client = ListeningClient(server.get_url())
    client.start()
    qt_until(lambda: len(recorder.opened) == 1 and client.connected.is_set(), what="the client")
    worker = Worker(server.publish, "from a thread")
    worker.start()
    qt_until(lambda: not worker.is_alive(), what="the worker")
    with pytest.raises(RuntimeError, match="call_soon_threadsafe"):
        worker.outcome()
    handed_over = Worker(server.call_soon_threadsafe, server.publish, "handed over")
    handed_over.start()
    qt_until(lambda: client.messages == ["handed over"], what="the handed-over message")

# -- the self-test against PySide6 builds that corrupt reference counts -------


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12: nothing to lose")
def test_the_probe_tells_a_call_that_loses_none_references() -> None:
    import ctypes

    def leaky() -> None:  # what PySide6 6.12.0 does on every call returning nothing
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(None))

    def restore() -> None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))

    try:
        assert qt_adapter._loses_none_references(leaky)
    finally:
        for _ in range(qt_adapter._PROBE_CALLS):
            restore()
    assert not qt_adapter._loses_none_references(lambda: None)


def test_the_installed_pyside_passes_the_self_test(app: Any) -> None:
    qt_adapter.check_pyside()


def test_attach_refuses_a_build_that_loses_none_references(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import PySide6

    monkeypatch.setattr(qt_adapter, "_loses_none_references", lambda call: True)
    with pytest.raises(qt_adapter.BrokenPySideError) as refused:
        qt_adapter.attach(server)
    message = str(refused.value)
    assert f"PySide6 {PySide6.__version__}" in message
    assert "PySide6-Essentials!=6.12.0" in message and "Python 3.12" in message

# -- sustained load: a PySide6 build that corrupts reference counts dies here --

# Each child quits when a line arrives on its standard input.
QUIT_ON_STDIN = textwrap.dedent(
    """
    import sys
    from PySide6.QtCore import QSocketNotifier

    def on_stdin_line(action):
        global stdin_notifier
        stdin_notifier = QSocketNotifier(sys.stdin.fileno(), QSocketNotifier.Type.Read)
        stdin_notifier.activated.connect(action)
    """
)

# A child process pumped by the adapter: it counts the adapter's slot calls
# (descriptor, step timer, deadline timer), echoes every message, and answers
# "slots?" with the count so far.
ADAPTER_SOAK = QUIT_ON_STDIN + textwrap.dedent(
    """
    from PySide6.QtCore import QCoreApplication
    import wsserver
    from wsserver.adapters import qt

    slot_calls = 0

    def counted(method):
        def slot(self, *args):
            global slot_calls
            slot_calls += 1
            method(self)
        return slot

    for name in ("_on_readable", "_on_step_timer", "_on_deadline_timer"):
        setattr(qt.QtPump, name, counted(getattr(qt.QtPump, name)))

    def on_message(client, message):
        if message.data == "slots?":
            client.send(str(slot_calls))
        else:
            client.send(message.data)

    app = QCoreApplication([])
    server = wsserver.Server()
    server.on_message = on_message
    server.start("127.0.0.1", 0)
    qt.attach(server)
    on_stdin_line(app.quit)
    print(server.get_url(), flush=True)
    app.exec()
    print("done", slot_calls, flush=True)
    """
)

# The Qt demo window, on a free port, with its real widgets.
DEMO_SOAK = QUIT_ON_STDIN + textwrap.dedent(
    """
    from PySide6.QtWidgets import QApplication
    sys.path.insert(0, sys.argv[1])
    import qt_demo
    from wsserver.adapters import qt

    app = QApplication([])
    window = qt_demo.QtChatWindow()
    window.room.start("127.0.0.1", 0)
    qt.attach(window.room.server)
    window.show()
    on_stdin_line(window.close)  # the last window: the application quits
    print(window.room.server.get_url("chat"), flush=True)
    app.exec()
    print("done", window.log.document().blockCount(), flush=True)
    """
)


class QtChild:
    """A Python child process that prints its WebSocket URL, then serves
    until a line arrives on its standard input."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def finish(self) -> str:
        """Ask the child to quit; return what it printed after its URL, and
        fail if it did not exit cleanly."""
        out, err = self.process.communicate("quit\n", timeout=DEADLINE)
        assert self.process.returncode == 0, f"child exited with {self.process.returncode}:\n{err[-3000:]}"
        return out

    def kill(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        _, err = self.process.communicate()
        return err


@pytest.mark.slow
def test_the_adapter_survives_50000_slot_calls() -> None:
    """Sequential echoes make at least two slot calls each (descriptor, then
    step timer), and each slot calls Qt methods that return nothing."""
    from websockets.sync.client import connect

    target, deadline = 50_000, time.monotonic() + 90
    child = QtChild(ADAPTER_SOAK)
    try:
        assert child.url.startswith("ws://127.0.0.1:"), child.kill()
        slot_calls, n = 0, 0
        with connect(child.url, open_timeout=DEADLINE) as ws:
            while slot_calls < target:
                assert time.monotonic() < deadline, f"only {slot_calls} slot calls after {n} echoes"
                for _ in range(1000):
                    n += 1
                    ws.send(f"echo {n}")
                    assert ws.recv(timeout=DEADLINE) == f"echo {n}"
                ws.send("slots?")
                slot_calls = int(ws.recv(timeout=DEADLINE))
        assert child.finish().split()[0] == "done"
    except BaseException:
        print(child.kill())
        raise


@pytest.mark.slow
def test_the_qt_demo_survives_5000_chat_round_trips() -> None:
    """Every chat line goes through the window's widgets (client list, live log)."""
    import json

    from websockets.sync.client import connect

    round_trips = 5_000
    child = QtChild(DEMO_SOAK, str(pathlib.Path(__file__).resolve().parent.parent / "demo_gui"))
    try:
        assert child.url.startswith("ws://127.0.0.1:"), child.kill()
        with connect(child.url, open_timeout=DEADLINE) as ws:
            for n in range(round_trips):
                ws.send(json.dumps({"name": "soak", "text": f"line {n}"}))
                while True:  # the room also tells who joined
                    line = json.loads(ws.recv(timeout=DEADLINE))
                    if line["kind"] == "chat":
                        break
                assert (line["from"], line["text"]) == ("soak", f"line {n}")
            # The log keeps its last 500 lines: it really drew them.
            assert child.finish().split() == ["done", "500"]
    except BaseException:
        print(child.kill())
        raise
