"""The asyncio adapter: the server lives in an asyncio program, next to
``websockets``' own asyncio client running in the same loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from conftest import DEADLINE, Recorder, count_polls
from guiclients import start_clients
from wsserver import Server
from wsserver.adapters import asyncio as asyncio_adapter


@pytest.fixture(autouse=True)
def both_pollers(poller_path: str) -> str:
    """Every test here runs on the platform's poller and on select() without
    a descriptor, the Windows path (see conftest.poller_path)."""
    return poller_path


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, DEADLINE))


def started_server(**options: Any) -> Server:
    server = Server(**options)
    server.start("127.0.0.1", 0)
    return server


def test_echo_in_the_same_loop_as_the_clients() -> None:
    server = started_server()
    recorder = Recorder(server, echo=True)

    async def talk(index: int) -> list[Any]:
        async with connect(server.get_url()) as ws:
            replies = []
            for n in range(20):
                await ws.send(f"{index}-{n}" if n % 2 else f"{index}-{n}".encode())
                replies.append(await ws.recv())
            return replies

    async def main() -> list[list[Any]]:
        handle = asyncio_adapter.attach(server)
        try:
            return await asyncio.gather(*(talk(i) for i in range(5)))
        finally:
            handle.detach()

    loop_thread = threading.get_ident()
    results = run(main())
    for i, replies in enumerate(results):
        assert replies == [f"{i}-{n}" if n % 2 else f"{i}-{n}".encode() for n in range(20)]
    server.stop()
    assert recorder.thread_ids == {loop_thread}
    recorder.check_invariants()


def test_publish_and_stop_from_the_loop() -> None:
    """Clients in other threads (or processes); the program publishes and
    stops the server from a coroutine."""
    server = started_server()
    recorder = Recorder(server)
    clients = start_clients(server.get_url(), 3)

    async def main() -> None:
        handle = asyncio_adapter.attach(server)
        while len(recorder.opened) < 3:
            await asyncio.sleep(0.01)
        server.publish("one")
        server.publish(b"two")
        while not all(len(c.messages) == 2 for c in clients):
            await asyncio.sleep(0.01)
        server.stop()  # closes with 1001 and waits (bounded) for the handshakes
        handle.detach()

    run(main())
    for client in clients:
        client.join(DEADLINE)
        client.check()
    assert [(c.messages, c.close_code) for c in clients] == [(["one", b"two"], 1001)] * 3
    assert recorder.thread_ids == {threading.get_ident()}
    recorder.check_invariants()


def test_idle_means_no_polls() -> None:
    server = started_server(heartbeat_interval=None)
    recorder = Recorder(server)
    polls = count_polls(server)

    async def main() -> int:
        handle = asyncio_adapter.attach(server)
        async with connect(server.get_url()) as a, connect(server.get_url()) as b:
            await a.ping()
            await b.ping()
            while len(recorder.opened) < 2 or server.reactor.has_pending_work():
                await asyncio.sleep(0.01)
            before = len(polls)
            await asyncio.sleep(1.0)
            idle_polls = len(polls) - before
        handle.detach()
        return idle_polls

    assert run(main()) <= 2
    server.stop()


def test_protocol_deadlines_fire_without_traffic() -> None:
    server = started_server(handshake_timeout=0.2)

    async def main() -> float:
        handle = asyncio_adapter.attach(server)
        host, port = server.get_local_ip()
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        assert await reader.read(1) == b""  # the server gave up on the silent connection
        elapsed = time.monotonic() - started
        writer.close()
        handle.detach()
        return elapsed

    assert 0.19 <= run(main()) < 5.0
    server.stop()


def test_timer_pumping_where_there_is_no_descriptor() -> None:
    server = started_server()
    server.on_message = lambda client, message: client.send(message.data)

    async def main() -> Any:
        handle = asyncio_adapter.attach(server, wakeup="timer")
        assert handle.fd is None
        async with connect(server.get_url()) as ws:
            await ws.send("ping by timer")
            reply = await ws.recv()
        handle.detach()
        return reply

    assert run(main()) == "ping by timer"
    server.stop()
