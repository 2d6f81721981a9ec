"""The Tk adapter on a real Tk root under a private Xvfb, with real clients.

Each test drives the Tk event loop itself (``dooneevent`` or ``mainloop``)
while ``websockets`` clients run on threads, and checks that callbacks run
on the Tk thread, that the window's widgets see the traffic, and that
destroying the window closes every client with 1001.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import DEADLINE, Recorder, Worker, count_polls
from demoscenario import demo_pairing_scenario, demo_rpc_scenario, demo_scenario, load_demo
from guiclients import ListeningClient, start_clients, wait_until
from wsserver import Server
from xvfb import Xvfb, XvfbUnavailable

tkinter = pytest.importorskip("tkinter", reason="tkinter is not installed (Debian: python3-tk)")
import _tkinter  # noqa: E402

from wsserver.adapters import tk as tk_adapter  # noqa: E402  (needs tkinter)


@pytest.fixture(autouse=True)
def both_pollers(poller_path: str) -> str:
    """Every test here runs on the platform's poller and on select() without
    a descriptor, the Windows path (see conftest.poller_path)."""
    return poller_path


@pytest.fixture(scope="session")
def x_display() -> Iterator[str]:
    xvfb = Xvfb()
    try:
        display = xvfb.start()
    except XvfbUnavailable as exc:
        pytest.skip(f"no X server for the Tk tests: {exc}")
    yield display
    _finished_roots.clear()
    gc.collect()
    xvfb.stop()


_finished_roots: list[Any] = []


@pytest.fixture
def root(x_display: str) -> Iterator[Any]:
    root = tkinter.Tk()
    yield root
    try:
        root.destroy()
    except tkinter.TclError:
        pass  # the test destroyed it
    # A Tcl interpreter must be deleted on the thread that made it. Keep
    # every root until the session ends and collect them here then, so the
    # garbage collector cannot free one on a client thread (Tcl aborts).
    _finished_roots.append(root)


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    server.start("127.0.0.1", 0)
    yield server
    server.stop()


def tk_until(root: Any, condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> None:
    """Run the Tk loop until ``condition()`` holds. Client threads cannot wake
    Tk, so a 10 ms ticker makes each turn come back to look."""
    ticker: list[str] = []

    def tick() -> None:
        ticker[:] = [root.after(10, tick)]

    tick()
    try:
        wait_until(lambda: root.tk.dooneevent(0), condition, timeout, what)
    finally:
        root.after_cancel(ticker[0])


def test_echo_runs_every_callback_on_the_tk_thread(root: Any, server: Server) -> None:
    recorder = Recorder(server, echo=True)
    log = tkinter.Listbox(root)
    log.pack()
    logged = server.on_message

    def on_message(client: Any, message: Any) -> None:
        logged(client, message)
        log.insert("end", f"{client.id}: {message.data}")

    server.on_message = on_message
    tk_adapter.attach(server, root)

    def talk(index: int) -> list[str]:
        from websockets.sync.client import connect

        with connect(server.get_url(), open_timeout=DEADLINE) as ws:
            replies = []
            for n in range(50):
                ws.send(f"{index}-{n}")
                replies.append(ws.recv(timeout=DEADLINE))
            return replies

    workers = [Worker(talk, i) for i in range(4)]
    for worker in workers:
        worker.start()
    tk_until(root, lambda: not any(w.is_alive() for w in workers), what="clients to finish")
    for i, worker in enumerate(workers):
        assert worker.outcome() == [f"{i}-{n}" for n in range(50)]
    tk_until(root, recorder.all_closed, what="every on_client_closed")

    assert log.size() == 200
    assert recorder.thread_ids == {threading.get_ident()}
    recorder.check_invariants()


def test_an_rpc_result_deferred_to_an_after_callback(root: Any, server: Server) -> None:
    """A method hands its answer to a Tk timer (as one waiting on a dialog
    would): the call is answered when the timer fires, on the Tk thread,
    and the window goes on serving other calls meanwhile."""
    import json

    from wsserver.rpc import Deferred, JsonRpc

    rpc = JsonRpc(server)
    resolved_on: list[int] = []

    def resolve(deferred: Deferred, value: int) -> None:
        resolved_on.append(threading.get_ident())
        deferred.resolve(value)

    @rpc.method
    def later(value: int) -> Deferred:
        deferred = Deferred()
        root.after(50, resolve, deferred, value * 2)
        return deferred

    @rpc.method
    def now() -> str:
        return "now"

    tk_adapter.attach(server, root)

    def call() -> dict[int, Any]:
        from websockets.sync.client import connect

        with connect(server.get_url(), open_timeout=DEADLINE) as ws:
            ws.send('{"jsonrpc": "2.0", "method": "later", "params": [21], "id": 1}')
            ws.send('{"jsonrpc": "2.0", "method": "now", "id": 2}')
            answers = [json.loads(ws.recv(timeout=DEADLINE)) for _ in range(2)]
            return {answer["id"]: answer["result"] for answer in answers}

    worker = Worker(call)
    worker.start()
    tk_until(root, lambda: not worker.is_alive(), what="the calls to be answered")
    assert worker.outcome() == {1: 42, 2: "now"}
    assert resolved_on == [threading.get_ident()]


def test_publish_from_a_button(root: Any, server: Server) -> None:
    recorder = Recorder(server)
    entry = tkinter.Entry(root)
    entry.insert(0, "hello from Tk")
    button = tkinter.Button(root, text="Publish", command=lambda: server.publish(entry.get()))
    entry.pack()
    button.pack()
    tk_adapter.attach(server, root)

    clients = start_clients(server.get_url(), 3)
    tk_until(root, lambda: len(recorder.opened) == 3, what="3 clients")
    button.invoke()
    tk_until(root, lambda: all(c.messages for c in clients), what="the published message")
    assert [c.messages for c in clients] == [["hello from Tk"]] * 3
    for client in clients:
        client.check()


def test_destroying_the_window_closes_every_client_with_1001(root: Any, server: Server) -> None:
    recorder = Recorder(server)
    port = server.get_local_ip()[1]
    polls = count_polls(server)
    handle = tk_adapter.attach(server, root)
    assert handle.wakeup == ("thread" if server.fileno() is None else "descriptor")
    clients = start_clients(server.get_url(), 5)
    tk_until(root, lambda: len(recorder.opened) == 5, what="5 clients")

    # Closed the way a user closes it: from inside the running main loop.
    root.after(0, root.destroy)
    root.mainloop()

    for client in clients:
        client.join(DEADLINE)
        client.check()
    assert [c.close_code for c in clients] == [1001] * 5
    recorder.check_invariants()
    assert recorder.thread_ids == {threading.get_ident()}
    assert not server.started
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()

    # Nothing of the adapter is left in the Tcl interpreter: no after() and
    # no file handler, so no callback can run once the window is gone.
    assert root.tk.call("after", "info") == ""
    polls_at_close = len(polls)
    server.start("127.0.0.1", 0)
    ListeningClient(server.get_url()).start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        root.tk.dooneevent(_tkinter.DONT_WAIT)
    assert len(polls) == polls_at_close


def test_a_callback_that_closes_the_window_still_closes_clients_cleanly(root: Any, server: Server) -> None:
    """The window goes from inside on_message: stop() then runs inside a poll step."""
    recorder = Recorder(server)
    recorded = server.on_message

    def on_message(client: Any, message: Any) -> None:
        recorded(client, message)
        if message.data == "close the window":
            root.destroy()

    server.on_message = on_message
    tk_adapter.attach(server, root)
    clients = start_clients(server.get_url(), 3)
    tk_until(root, lambda: len(recorder.opened) == 3 and all(c.connected.is_set() for c in clients), what="3 clients")
    clients[0].send("close the window")
    root.mainloop()  # returns once the window is gone
    for client in clients:
        client.join(DEADLINE)
        client.check()
    assert [c.close_code for c in clients] == [1001] * 3
    recorder.check_invariants()
    assert [m.data for _, m in recorder.messages] == ["close the window"]


def test_destroying_a_child_widget_does_not_stop_the_server(root: Any, server: Server) -> None:
    Recorder(server, echo=True)
    child = tkinter.Label(root, text="child")
    child.pack()
    tk_adapter.attach(server, root)
    child.destroy()
    worker = Worker(_echo_once, server.get_url())
    worker.start()
    tk_until(root, lambda: not worker.is_alive(), what="the echo")
    assert worker.outcome() == "still here"


def _echo_once(url: str) -> str:
    from websockets.sync.client import connect

    with connect(url, open_timeout=DEADLINE) as ws:
        ws.send("still here")
        return ws.recv(timeout=DEADLINE)


def test_a_worker_thread_publishes_10000_messages_in_order(root: Any, server: Server) -> None:
    recorder = Recorder(server)
    tk_adapter.attach(server, root)
    client = ListeningClient(server.get_url())
    client.start()
    tk_until(root, lambda: len(recorder.opened) == 1, what="the client")

    def produce() -> None:
        for n in range(10_000):
            server.call_soon_threadsafe(server.publish, str(n))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    tk_until(root, lambda: len(client.messages) == 10_000, timeout=30, what="10,000 messages")
    producer.join(DEADLINE)
    assert client.messages == [str(n) for n in range(10_000)]
    client.check()


def test_idle_means_no_polls(root: Any) -> None:
    """With clients connected and nothing happening, the Tk loop does not poll at all."""
    server = Server(heartbeat_interval=None)
    server.start("127.0.0.1", 0)
    recorder = Recorder(server)
    polls = count_polls(server)
    handle = tk_adapter.attach(server, root)
    assert handle.wakeup == ("thread" if server.fileno() is None else "descriptor")
    clients = start_clients(server.get_url(), 5)
    tk_until(root, lambda: len(recorder.opened) == 5, what="5 clients")
    # Let the last handshake bytes drain, then watch one quiet second.
    tk_until(root, lambda: not server.reactor.has_pending_work() and all(c.connected.is_set() for c in clients))
    before = len(polls)
    cpu_before = time.process_time()
    root.after(1000, root.quit)
    root.mainloop()
    assert len(polls) - before <= 2, f"{len(polls) - before} polls in an idle second"
    assert time.process_time() - cpu_before < 0.5
    server.stop()


def test_protocol_deadlines_fire_without_traffic(root: Any) -> None:
    """A connection that never sends its request is closed at handshake_timeout:
    only the adapter's deadline timer can make that happen."""
    server = Server(handshake_timeout=0.2)
    server.start("127.0.0.1", 0)
    tk_adapter.attach(server, root)
    silent = socket.create_connection(server.get_local_ip(), timeout=DEADLINE)
    started = time.monotonic()
    closed = threading.Event()

    def wait_for_eof() -> None:
        silent.recv(1)
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    tk_until(root, closed.is_set, what="the handshake timeout")
    assert 0.19 <= time.monotonic() - started < 5.0
    silent.close()
    server.stop()


def test_timer_pumping_on_request(root: Any, server: Server) -> None:
    Recorder(server, echo=True)
    polls = count_polls(server)
    handle = tk_adapter.attach(server, root, wakeup="timer")
    assert handle.fd is None
    worker = Worker(_echo_once, server.get_url())
    worker.start()
    tk_until(root, lambda: not worker.is_alive(), what="the echo")
    assert worker.outcome() == "still here"
    assert polls, "the timer never polled"


def test_a_wakeup_that_does_not_fit_the_reactor_is_refused(root: Any, server: Server, poller_path: str) -> None:
    wrong = "descriptor" if poller_path == "select" else "thread"
    with pytest.raises(ValueError, match="descriptor"):
        tk_adapter.attach(server, root, wakeup=wrong)


def _echo_rounds(url: str, start: int, count: int) -> None:
    from websockets.sync.client import connect

    with connect(url, open_timeout=DEADLINE) as ws:
        for n in range(start, start + count):
            ws.send(str(n))
            assert ws.recv(timeout=DEADLINE) == str(n)


# Timer pumping waits busy_interval (2 ms) per echo: fewer rounds keep it short.
@pytest.mark.parametrize(("wakeup", "rounds"), [("auto", 5000), ("timer", 1500)], ids=["woken", "timer-pumping"])
@pytest.mark.slow
def test_sustained_load_grows_nothing_per_event(root: Any, server: Server, wakeup: Any, rounds: int) -> None:
    """Thousands of poll steps leave the same Python objects, Tcl commands
    and ``after`` timers behind as a few hundred did: nothing the adapter
    makes per event (file handlers, after and after_idle callbacks) is kept."""
    server.on_message = lambda client, message: client.send(message.data)
    polls = count_polls(server)

    def census() -> tuple[int, int, int, int]:
        gc.collect()
        commands = len(root.tk.splitlist(root.tk.call("info", "commands")))
        timers = len(root.tk.splitlist(root.tk.call("after", "info")))
        channels = len(root.tk.splitlist(root.tk.call("file", "channels")))
        return len(gc.get_objects()), commands, timers, channels

    unattached = census()
    handle = tk_adapter.attach(server, root, wakeup=wakeup)

    def run(start: int, count: int) -> None:
        worker = Worker(_echo_rounds, server.get_url(), start, count)
        worker.start()
        tk_until(root, lambda: not worker.is_alive(), timeout=60, what=f"{count} echoes")
        worker.outcome()
        # Quiet: no client, no timer (lingering sockets closed), so the
        # adapter has nothing armed either.
        tk_until(root, lambda: server.client_count() == 0 and server.next_deadline() is None and not server.reactor.has_pending_work())

    run(0, 300)  # warm-up: caches, the first connection's one-off allocations
    objects, commands, timers, channels = census()
    steps_before = len(polls)
    run(300, rounds)
    assert len(polls) - steps_before >= rounds, "each echo should take at least one poll step"
    objects_after, commands_after, timers_after, channels_after = census()
    assert channels_after == channels, "Tcl channels were left behind"
    print(f"after {len(polls) - steps_before} steps: {objects_after - objects:+} objects, {commands_after - commands:+} Tcl commands, {timers} -> {timers_after} after timers")
    assert commands_after == commands, "Tcl commands were left behind"
    assert timers_after <= max(timers, 2), "after timers were left behind"
    # A few hundred objects of slack for the interpreter's own caches; a
    # leak per event would leave thousands.
    assert objects_after - objects < 200, f"{objects_after - objects} more Python objects"
    handle.detach()
    assert census()[1:] == unattached[1:], "detach left a Tcl command, timer or channel behind"


def test_detach_stops_pumping(root: Any, server: Server) -> None:
    polls = count_polls(server)
    handle = tk_adapter.attach(server, root)
    tk_until(root, lambda: polls, what="the first poll")
    waker = handle.waker
    handle.detach()
    assert root.tk.call("after", "info") == ""
    assert waker is None or not waker.is_alive(), "the waker thread outlived detach()"
    count = len(polls)
    socket.create_connection(server.get_local_ip(), timeout=DEADLINE).close()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        root.tk.dooneevent(_tkinter.DONT_WAIT)
    assert len(polls) == count


# -- the Tk demo program ------------------------------------------------------


class TkDemoDriver:
    """What demo_scenario needs from the Tk demo window."""

    def __init__(self, root: Any, pair: bool = False) -> None:
        self.root = root
        self.window = load_demo("tk_demo").TkChatWindow(root, pair=pair)
        self.room = self.window.room

    def attach(self) -> None:
        tk_adapter.attach(self.room.server, self.root)

    def pump_until(self, condition: Callable[[], Any], what: str) -> None:
        tk_until(self.root, condition, what=what)

    def rows(self) -> list[tuple[str, ...]]:
        tree = self.window.tree
        return [tuple(str(v) for v in tree.item(iid, "values")) for iid in tree.get_children()]

    def log_text(self) -> str:
        return self.window.log.get("1.0", "end")

    def publish(self, text: str) -> str:
        self.window.entry.insert(0, text)
        self.window.publish_button.invoke()
        return self.window.entry.get()

    def close_first_row(self) -> None:
        self.window.tree.selection_set(self.window.tree.get_children()[0])
        self.window.close_button.invoke()

    def close_window(self) -> None:
        self.root.after(0, self.root.destroy)
        self.root.mainloop()

    def type_draft(self, text: str) -> None:
        self.window.entry.insert(0, text)

    def ask_pages(self) -> None:
        self.window.ask_button.invoke()

    def pairing_link(self) -> str:
        return self.window.pairing_link

    def qr_modules(self) -> list[list[bool]]:
        """Read back from the canvas: each dark rectangle drawn is a module."""
        module = load_demo("tk_demo").QR_MODULE
        canvas = self.window.qr
        size = int(canvas["width"]) // module
        modules = [[False] * size for _ in range(size)]
        for item in canvas.find_all():
            x, y = (int(v) // module for v in canvas.coords(item)[:2])
            modules[y][x] = True
        return modules

    def revoke_first_row(self) -> None:
        self.window.tree.selection_set(self.window.tree.get_children()[0])
        self.window.revoke_button.invoke()


def test_the_tk_demo(root: Any) -> None:
    demo_scenario(TkDemoDriver(root))


def test_the_tk_demo_pairs_devices_by_qr_code(root: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsserver.http import pairing

    demo_pairing_scenario(TkDemoDriver(root, pair=True), lambda: monkeypatch.setattr(pairing, "_loopback", lambda host: False))


def test_the_tk_demos_rpc_panel(root: Any, tmp_path: Any) -> None:
    from chromium import AVAILABLE

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    demo_rpc_scenario(TkDemoDriver(root), tmp_path / "profile")


def test_a_send_from_a_worker_thread_is_refused_with_the_way_to_hand_it_over(root: Any, server: Server) -> None:
    recorder = Recorder(server)
    tk_adapter.attach(server, root)
    client = ListeningClient(server.get_url())
    client.start()
    tk_until(root, lambda: len(recorder.opened) == 1 and client.connected.is_set(), what="the client")
    worker = Worker(server.send, recorder.opened[0], "from a thread")
    worker.start()
    tk_until(root, lambda: not worker.is_alive(), what="the worker")
    with pytest.raises(RuntimeError, match="call_soon_threadsafe"):
        worker.outcome()
    handed_over = Worker(server.call_soon_threadsafe, server.send, recorder.opened[0], "handed over")
    handed_over.start()
    tk_until(root, lambda: client.messages == ["handed over"], what="the handed-over message")
