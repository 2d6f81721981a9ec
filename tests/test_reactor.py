"""reactor.py: the budgeted poll step, timers, wake-ups and stream buffering,
over real socket pairs."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from conftest import DEADLINE
from wsserver.reactor import Listener, Reactor, Stream, address_reuse_option


class Sink:
    """A StreamHandler that records what happens to its stream."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.drained = 0
        self.lost: list[BaseException | None] = []

    def data_received(self, data: memoryview) -> None:
        self.data += data

    def eof_received(self) -> None:
        self.eof = True

    def write_drained(self) -> None:
        self.drained += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


@pytest.fixture
def reactor() -> Reactor:
    r = Reactor()
    yield r
    r.close()


def stream_pair(reactor: Reactor) -> tuple[Stream, Sink, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sink = Sink()
    return Stream(reactor, ours, sink), sink, theirs


def pump(reactor: Reactor, condition, timeout: float = DEADLINE) -> int:
    steps = 0
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.poll(0.01)
        steps += 1
    return steps


def test_poll_never_waits_longer_than_its_timeout(reactor: Reactor) -> None:
    start = time.monotonic()
    assert reactor.poll(0.05) is False
    assert time.monotonic() - start < 1.0  # returned, not stuck
    start = time.monotonic()
    reactor.poll(0)
    assert time.monotonic() - start < 0.5


def test_poll_wakes_for_a_due_timer_within_its_timeout(reactor: Reactor) -> None:
    fired = []
    reactor.call_later(0.02, fired.append, "due")
    assert reactor.next_deadline() is not None
    pump(reactor, lambda: fired)
    assert fired == ["due"] and reactor.next_deadline() is None


def test_cancelled_timers_do_not_fire_or_count(reactor: Reactor) -> None:
    fired = []
    timer = reactor.call_later(0, fired.append, 1)
    timer.cancel()
    assert reactor.next_deadline() is None
    reactor.poll(0)
    assert fired == []


def test_a_raising_timer_does_not_escape_poll(reactor: Reactor) -> None:
    def boom() -> None:
        raise RuntimeError("timer bug")

    fired = []
    reactor.call_later(0, boom)
    reactor.call_later(0, fired.append, "next")
    pump(reactor, lambda: fired)


def test_call_soon_threadsafe_wakes_the_selector_descriptor(reactor: Reactor) -> None:
    fd = reactor.fileno()
    if fd is None:
        pytest.skip("this platform's selector has no descriptor")
    assert select.select([fd], [], [], 0)[0] == []
    ran = []
    thread = threading.Thread(target=reactor.call_soon_threadsafe, args=(ran.append, threading.get_ident))
    thread.start()
    thread.join()
    # The selector's own descriptor is readable: a GUI watching it wakes up.
    assert select.select([fd], [], [], DEADLINE)[0] == [fd]
    pump(reactor, lambda: ran)
    assert select.select([fd], [], [], 0)[0] == []


def test_stream_reads_and_writes(reactor: Reactor) -> None:
    stream, sink, peer = stream_pair(reactor)
    peer.sendall(b"hello")
    pump(reactor, lambda: sink.data == b"hello")
    stream.write(b"wor", memoryview(b"ld"))
    assert peer.recv(100) == b"world"
    peer.close()
    pump(reactor, lambda: sink.lost)
    assert sink.eof and sink.lost == [None] and stream.closed


def test_large_writes_are_buffered_and_flushed_in_slices(reactor: Reactor) -> None:
    stream, sink, peer = stream_pair(reactor)
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
    stream.write(payload)
    assert 0 < stream.buffered_amount <= len(payload)
    received = bytearray()
    peer.setblocking(False)
    polls = 0

    def drain() -> bool:
        nonlocal polls
        polls += 1
        try:
            while chunk := peer.recv(1 << 20):
                received.extend(chunk)
        except BlockingIOError:
            pass
        return len(received) == len(payload)

    pump(reactor, drain)
    assert bytes(received) == payload and stream.buffered_amount == 0
    assert sink.drained >= 1
    assert polls > 8  # the 8 MiB went out across many poll steps, not in one


def test_close_flushes_first_and_abort_does_not(reactor: Reactor) -> None:
    stream, sink, peer = stream_pair(reactor)
    stream.write(b"x" * (4 << 20))
    stream.close()
    assert not stream.closed and stream.is_closing
    stream.write(b"ignored after close")
    got = bytearray()
    peer.settimeout(DEADLINE)

    def drained() -> bool:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return False
        got.extend(chunk)
        return not chunk

    peer.setblocking(False)
    pump(reactor, drained)
    assert len(got) == 4 << 20 and sink.lost == [None]

    stream2, sink2, peer2 = stream_pair(reactor)
    stream2.write(b"y" * (4 << 20))
    stream2.abort(ConnectionResetError("test"))
    assert stream2.closed and isinstance(sink2.lost[0], ConnectionResetError)
    peer2.close()
    peer.close()


def test_budget_bounds_a_poll_step_and_reports_leftover_work() -> None:
    reactor = Reactor(budget=0.0)  # every step does exactly one unit of work
    try:
        streams = [stream_pair(reactor) for _ in range(5)]
        for _, _, peer in streams:
            peer.sendall(b"data")
        assert reactor.poll(0.1) is True  # one stream served, four left over
        assert sum(bool(sink.data) for _, sink, _ in streams) == 1
        steps = pump(reactor, lambda: all(sink.data == b"data" for _, sink, _ in streams))
        assert steps >= 3
        assert reactor.poll(0) is False
    finally:
        reactor.close()


def test_a_full_read_is_resumed_without_waiting_for_select() -> None:
    reactor = Reactor(budget=0.0, read_size=1024)
    try:
        stream, sink, peer = stream_pair(reactor)
        peer.sendall(b"z" * 10_000)
        pump(reactor, lambda: len(sink.data) >= 1024)
        assert len(sink.data) == 1024  # one unit of work per step with no budget
        assert reactor.has_pending_work()  # the next read is already known to be due
        pump(reactor, lambda: len(sink.data) == 10_000)
    finally:
        reactor.close()


def test_peer_reset_is_reported_once(reactor: Reactor) -> None:
    stream, sink, peer = stream_pair(reactor)
    stream.write(b"x" * (8 << 20))  # a backlog the peer will never read
    peer.close()
    pump(reactor, lambda: sink.lost)
    assert len(sink.lost) == 1 and stream.closed
    reactor.poll(0)
    assert len(sink.lost) == 1


# -- descriptors running out ----------------------------------------------------

# A server in a child process with only 64 descriptors. Commands on stdin:
# "measure S" polls for S seconds and prints the CPU and poll() calls it
# took; "quit" ends it. Log lines go to stderr.
OUT_OF_DESCRIPTORS = """
import json, logging, resource, select, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
import wsserver
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="LOG %(message)s")
server = wsserver.Server(heartbeat_interval=None)
server.on_message = lambda client, message: client.send(message.data)
server.start("127.0.0.1", 0)
print(server.get_local_ip()[1], flush=True)
while True:
    server.poll(0.05)
    if select.select([sys.stdin], [], [], 0)[0]:
        command = sys.stdin.readline().split()
        if command[0] == "quit":
            break
        seconds = float(command[1])
        cpu, polls, started = time.process_time(), 0, time.monotonic()
        while time.monotonic() - started < seconds:
            server.poll(0.05)
            polls += 1
        print(json.dumps({"cpu": time.process_time() - cpu, "polls": polls, "seconds": seconds}), flush=True)
server.shutdown()
"""


@pytest.mark.slow
def test_running_out_of_descriptors_does_not_spin_and_recovers() -> None:
    """accept() failing with EMFILE leaves the listener readable: the
    server must back off instead of spinning, log a bounded number of
    lines, and serve again once descriptors are free."""
    import json
    import subprocess
    import sys

    from websockets.sync.client import connect

    child = subprocess.Popen(
        [sys.executable, "-c", OUT_OF_DESCRIPTORS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdin is not None and child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(120):  # more than the child can accept; the rest wait in its backlog
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
        child.stdin.write("measure 1.5\n")
        child.stdin.flush()
        busy = json.loads(child.stdout.readline())
        # Spinning took 83 % of a core and 40,000 poll() calls a second.
        assert busy["cpu"] < 0.15 * busy["seconds"], busy
        assert busy["polls"] < 200 * busy["seconds"], busy
        for sock in clients:
            sock.close()
        clients.clear()
        deadline = time.monotonic() + DEADLINE
        while True:  # served again once the descriptors are free
            try:
                with connect(f"ws://127.0.0.1:{port}/", open_timeout=DEADLINE) as ws:
                    ws.send("back")
                    assert ws.recv(timeout=DEADLINE) == "back"
                break
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline, "the server did not recover"
        child.stdin.write("quit\n")
        child.stdin.flush()
        _, log = child.communicate(timeout=DEADLINE)
        assert child.returncode == 0, log
        lines = [line for line in log.splitlines() if "accept" in line]
        assert 1 <= len(lines) <= 4, lines
    finally:
        for sock in clients:
            sock.close()
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_a_listener_out_of_descriptors_backs_off_logs_once_and_recovers(reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    import errno

    accepted: list[socket.socket] = []
    listener = reactor.listen("127.0.0.1", 0, lambda sock, address: accepted.append(sock))
    failing = [True]

    class OutOfDescriptors:
        """The listening socket, whose accept() fails while ``failing``."""

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def accept(self) -> tuple[socket.socket, object]:
            if failing[0]:
                raise OSError(errno.EMFILE, "Too many open files")
            return self.sock.accept()

        def __getattr__(self, name: str) -> object:
            return getattr(self.sock, name)

    listener.socket = OutOfDescriptors(listener.socket)  # type: ignore[assignment]
    client = socket.create_connection(listener.address[:2])
    try:
        with caplog.at_level("WARNING", logger="wsserver"):
            deadline = time.monotonic() + DEADLINE
            while listener._failures < 3:  # three pauses, each ended by its timer
                reactor.poll(0.05)
                assert time.monotonic() < deadline
            assert listener._backoff == 4 * Listener.BACKOFF  # doubling
            failing[0] = False
            while not accepted:
                reactor.poll(0.05)
                assert time.monotonic() < deadline
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2, messages
        assert "pausing the listener" in messages[0] and "accepting connections again after 3 failed" in messages[1]
    finally:
        client.close()
        for sock in accepted:
            sock.close()
        listener.close()


def test_a_listening_socket_sets_the_reuse_option_of_its_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """SO_REUSEADDR on Unix (restart over TIME_WAIT); on Windows, where that
    option would let another process bind the same port, SO_EXCLUSIVEADDRUSE."""
    assert address_reuse_option("linux") == address_reuse_option("darwin") == socket.SO_REUSEADDR
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", -5, raising=False)  # Windows' constant (~SO_REUSEADDR)
    assert address_reuse_option("win32") == -5
