"""The server run by ``serve_forever()`` on its own thread, with real clients:
python-websockets (asyncio and sync), websocket-client, and Node's ws."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import websocket  # websocket-client
import websockets
from websockets.exceptions import ConnectionClosed

from conftest import DEADLINE
from wsserver import Client, Message, Server


@pytest.fixture
def running() -> Server:
    """An echo server on a serve_forever() thread; stopped from this thread
    the only safe way, through call_soon_threadsafe()."""
    server = Server()
    server.on_message = lambda client, message: client.send(message.data)
    server.start("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.call_soon_threadsafe(server.stop)
    thread.join(DEADLINE)
    assert not thread.is_alive(), "serve_forever() did not return after stop()"


def test_asyncio_websockets_client(running: Server) -> None:
    async def client() -> list:
        async with websockets.connect(running.get_url(), max_size=None) as ws:
            replies = []
            for data in ["text", b"\x00" * 10, "é" * 100_000, bytes(3 * 1024 * 1024)]:
                await ws.send(data)
                replies.append(await ws.recv())
            await ws.ping(b"x")
            return replies

    replies = asyncio.run(asyncio.wait_for(client(), DEADLINE))
    assert replies == ["text", b"\x00" * 10, "é" * 100_000, bytes(3 * 1024 * 1024)]


def test_websocket_client_library(running: Server) -> None:
    ws = websocket.create_connection(running.get_url("/path?x=1"), timeout=DEADLINE)
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x01\x02")
        assert ws.recv() == b"\x01\x02"
        ws.ping("p")
        opcode, frame = ws.recv_data_frame(True)
        assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"p")
    finally:
        ws.close()


def test_many_clients_concurrently(running: Server) -> None:
    async def one(i: int) -> list:
        async with websockets.connect(running.get_url()) as ws:
            out = []
            for j in range(20):
                await ws.send(f"{i}:{j}")
                out.append(await ws.recv())
            return out

    async def all_clients() -> list:
        return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(asyncio.wait_for(all_clients(), DEADLINE))
    assert results == [[f"{i}:{j}" for j in range(20)] for i in range(20)]


def test_stop_from_another_thread_sends_1001(running: Server) -> None:
    async def client() -> int | None:
        async with websockets.connect(running.get_url()) as ws:
            await ws.send("hi")
            await ws.recv()
            running.call_soon_threadsafe(running.stop)
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    assert asyncio.run(asyncio.wait_for(client(), DEADLINE)) == 1001


NODE_DIR = Path(__file__).parent / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_ws_client(running: Server) -> None:
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.skip("Node's ws is not installed: run `npm install` in tests/node (.ci/run does)")
    chosen = []

    def on_upgrade(client: Client, request, response, protocol, origin) -> None:
        chosen.append(protocol)
        response.headers["Sec-WebSocket-Protocol"] = protocol[0]

    def on_message(client: Client, message: Message) -> None:
        if isinstance(message.data, str) and message.data.startswith("big:"):
            client.send(f"big of {len(message.data)}")
        else:
            client.send(message.data)

    # Callbacks are set from this thread while the server thread is idle in
    # select(); call_soon_threadsafe makes the hand-over explicit.
    ready = threading.Event()

    def install() -> None:
        running.on_upgrade_to_websocket = on_upgrade
        running.on_message = on_message
        ready.set()

    running.call_soon_threadsafe(install)
    assert ready.wait(DEADLINE)
    result = subprocess.run(
        ["node", str(NODE_DIR / "client.mjs"), running.get_url()],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 3,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "texts": ["héllo from node", "fragmented", f"big of {4 + 200000}"],
        "binaries": [[0, 1, 2, 255]],
        "pong": "node ping",
        "close": [1000, ""],  # the server echoes the code, not the reason
        "protocol": "chat",
        # permessage-deflate is negotiated by default, and a large text
        # message went both ways compressed.
        "extensions": "permessage-deflate",
        "echoed": True,
    }
    assert chosen == [["chat"]]
