"""The custom-loop patterns of examples/custom_loop.py and the README, with
real clients: a plain ``poll(timeout)`` loop, ``serve_forever`` stopped from
another thread, and ``select`` on ``fileno()`` beside the program's own pipe."""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import DEADLINE, Recorder, Worker, load_program
from guiclients import ListeningClient
from wsserver import Server


def load_example():
    return load_program("examples/custom_loop.py")


def _echo(url: str, texts: list[str]) -> list[str]:
    from websockets.sync.client import connect

    with connect(url, open_timeout=DEADLINE) as ws:
        replies = []
        for text in texts:
            ws.send(text)
            replies.append(ws.recv(timeout=DEADLINE))
        return replies


def test_a_plain_poll_loop_echoes_and_wakes_at_once() -> None:
    server = Server()
    server.start("127.0.0.1", 0)
    server.on_message = lambda client, message: client.send(message.data)
    texts = [f"message {n}" for n in range(100)]
    worker = Worker(_echo, server.get_url(), texts)
    started = time.monotonic()
    worker.start()
    while worker.is_alive():
        assert time.monotonic() - started < DEADLINE, "the echo client did not finish"
        server.poll(0.5)
    assert worker.outcome() == texts
    # 100 round trips, each of which would cost a whole poll timeout if a
    # poll waited on the network without waking for it.
    assert time.monotonic() - started < 25
    server.stop()


def test_serve_forever_stops_from_another_thread() -> None:
    server = Server()
    server.start("127.0.0.1", 0)
    recorder = Recorder(server)
    client = ListeningClient(server.get_url())
    recorded = server.on_open

    def on_open(c: object) -> None:
        recorded(c)  # type: ignore[misc]
        # The one thread-safe method, from a thread that is not the loop's.
        threading.Thread(target=server.call_soon_threadsafe, args=(server.stop,), daemon=True).start()

    server.on_open = on_open
    client.start()
    timer = threading.Timer(DEADLINE, server.call_soon_threadsafe, args=(server.stop,))
    timer.start()  # a safety net: a hang ends the loop and fails below
    try:
        server.serve_forever()
    finally:
        timer.cancel()
    client.join(DEADLINE)
    assert client.close_code == 1001
    recorder.check_invariants()


def test_select_on_fileno_beside_the_programs_own_pipe() -> None:
    if not hasattr(os, "pipe") or Server().fileno() is None:
        pytest.skip("the reactor has no descriptor on this platform")
    example = load_example()
    server = Server()
    server.start("127.0.0.1", 0)
    recorder = Recorder(server)
    read_end, write_end = os.pipe()
    heard = threading.Event()
    recorded = server.on_message

    def on_message(client: object, message: object) -> None:
        recorded(client, message)  # type: ignore[misc]
        heard.set()

    server.on_message = on_message
    client = ListeningClient(server.get_url())
    client.start()
    lines = [f"line {n}" for n in range(500)]

    def feed() -> None:
        try:
            if client.connected.wait(DEADLINE) and client.error is None:
                client.send("hello from the client")
                # The loop serves the client while it also waits on the pipe.
                if heard.wait(DEADLINE):
                    os.write(write_end, "".join(f"{line}\n" for line in lines).encode())
        finally:
            os.close(write_end)

    threading.Thread(target=feed, daemon=True).start()
    try:
        published = example.publish_lines(server, read_end)
    finally:
        os.close(read_end)
    server.stop()
    client.join(DEADLINE)
    client.check()
    assert published == 500
    assert client.messages == lines
    assert client.close_code == 1001
    assert [m.data for _, m in recorder.messages] == ["hello from the client"]
    recorder.check_invariants()


def test_stop_queued_from_a_thread_ahead_of_other_calls() -> None:
    """stop() pumps the reactor itself, running the calls queued behind it;
    the poll step that ran stop() must not trip over the emptied queue."""
    server = Server()
    server.start("127.0.0.1", 0)
    recorder = Recorder(server)
    client = ListeningClient(server.get_url())
    client.start()
    deadline = time.monotonic() + DEADLINE
    while not (recorder.opened and client.connected.is_set()):
        assert time.monotonic() < deadline, "the client did not connect"
        server.poll(0.01)
    ran: list[str] = []
    server.call_soon_threadsafe(server.stop)
    server.call_soon_threadsafe(ran.append, "second")
    server.call_soon_threadsafe(ran.append, "third")
    server.poll(0)
    assert ran == ["second", "third"]
    assert not server.started
    client.join(DEADLINE)
    assert client.close_code == 1001
    recorder.check_invariants()
