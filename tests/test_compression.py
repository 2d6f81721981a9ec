"""permessage-deflate end to end: a real server, real clients over loopback.

``websockets`` negotiates it with its default offer; raw sockets check what
is on the wire (RSV1 on the first frame only, small messages uncompressed,
large ones sent a slice at a time) and send what no library would (a
decompression bomb, a header that cannot be parsed). Node's ``ws`` and
Chromium negotiate it in ``test_serve_forever.py`` and ``test_browser.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import zlib
from typing import Any

import pytest
from websockets.sync.client import connect

from conftest import DEADLINE, Recorder, Worker, driver_of, pump_until, run_client, ws_url
from rawws import client_frame, close_payload, handshake_request, open_websocket, read_http_head, read_raw_frame
from wsserver import Client, Compression, Message, Server
from wsserver.protocol import CloseCode, Opcode
from wsserver.protocol.deflate import MESSAGE_TAIL

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
JSON = json.dumps([{"row": i, "name": f"item {i}", "tags": ["x", "y"][: i % 3]} for i in range(30000)])


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def read_message(sock: socket.socket, decompressor: Any) -> tuple[list[int], bytes]:
    """One message's frames: their first bytes, and the payload inflated (by
    the connection's ``decompressor``) if RSV1 said so."""
    firsts, payload = [], b""
    while True:
        b0, data = read_raw_frame(sock)
        if b0 & 0x0F >= 8:
            continue
        firsts.append(b0)
        payload += data
        if b0 & 0x80:
            break
    if firsts[0] & 0x40:
        payload = decompressor.decompress(payload + MESSAGE_TAIL)
    return firsts, payload


@pytest.mark.parametrize("server_no_context_takeover", [False, True], ids=["context", "no-context"])
def test_websockets_client_round_trips_and_publish(make_server: Any, server_no_context_takeover: bool) -> None:
    server = make_server(compression=Compression(server_no_context_takeover=server_no_context_takeover))
    recorder = Recorder(server)
    texts = ["small", JSON[:2000], JSON, "é" * 100_000, ""]
    blobs = [bytes(range(256)) * 400, b""]

    def on_message(client: Client, message: Message) -> None:
        recorder.messages.append((client, message))
        if message.data == "publish":
            for item in texts + blobs:
                server.publish(item)
        else:
            client.send(message.data)

    server.on_message = on_message

    def client() -> tuple[Any, list[Any], list[list[Any]]]:
        with connect(ws_url(server), max_size=None) as first, connect(ws_url(server), max_size=None) as second:
            echoes = []
            for item in texts + blobs:
                first.send(item)
                echoes.append(first.recv())
            second.send("publish")
            published = [[ws.recv() for _ in texts + blobs] for ws in (first, second)]
            return first.protocol.extensions, echoes, published

    extensions, echoes, published = run_client(server, client)
    assert [type(e).__name__ for e in extensions] == ["PerMessageDeflate"]
    assert echoes == texts + blobs
    assert published == [texts + blobs] * 2
    assert all(c.extensions and c.extensions.startswith("permessage-deflate") for c in recorder.opened)
    pump_until(server, recorder.all_closed)
    recorder.check_invariants()
    assert not recorder.errors


def test_the_wire_rsv1_on_the_first_frame_and_small_messages_plain(server: Server) -> None:
    def on_message(client: Client, message: Message) -> None:
        for size in (10, 1000, len(JSON)):
            client.send(JSON[:size])

    server.on_message = on_message

    def client() -> list[tuple[list[int], bytes]]:
        with open_websocket(server.get_local_ip(), extra=OFFER) as sock:
            sock.sendall(client_frame(Opcode.TEXT, deflate(b"go"), rsv=4))
            decompressor = zlib.decompressobj(-15)
            return [read_message(sock, decompressor) for _ in range(3)]

    small, medium, large = run_client(server, client)
    assert small == ([0x81], JSON[:10].encode())  # under the threshold: no RSV1
    assert medium == ([0xC1], JSON[:1000].encode())
    firsts, payload = large
    assert payload == JSON.encode()
    assert len(firsts) > 1, "a large message goes out a slice per frame"
    assert firsts[0] == 0x41 and all(b0 & 0x70 == 0 and b0 & 0x0F == 0 for b0 in firsts[1:]) and firsts[-1] & 0x80


def test_a_large_send_is_compressed_over_several_poll_steps(server: Server) -> None:
    recorder = Recorder(server)
    compressing: list[bool] = []

    def on_message(client: Client, message: Message) -> None:
        client.send(JSON * 4)
        compressing.append(driver_of(client).ws.compressing)
        client.send("after")

    server.on_message = on_message

    def client() -> list[Any]:
        with connect(ws_url(server), max_size=None) as ws:
            ws.send("go")
            return [ws.recv(), ws.recv()]

    assert run_client(server, client) == [JSON * 4, "after"]
    assert compressing == [True], "send() returned with the rest of the message still to compress"
    pump_until(server, recorder.all_closed)


def test_a_decompression_bomb_gets_1009_and_others_carry_on(make_server: Any) -> None:
    server = make_server(max_message_size=1024 * 1024)
    recorder = Recorder(server, echo=True)
    bomb = client_frame(Opcode.BINARY, deflate(bytes(256 * 1024 * 1024)), rsv=4)  # 256 MiB in about 256 KiB

    def bomber() -> tuple[int, bytes]:
        with open_websocket(server.get_local_ip(), extra=OFFER) as sock:
            try:
                sock.sendall(bomb)
            except OSError:
                pass  # the server may close before it has read it all
            while True:
                b0, payload = read_raw_frame(sock)
                if b0 & 0x0F == Opcode.CLOSE:
                    return b0, payload

    def bystander() -> str:
        with connect(ws_url(server)) as ws:
            ws.send("still here")
            return str(ws.recv())

    _, close = run_client(server, bomber)
    assert close[:2] == close_payload(CloseCode.MESSAGE_TOO_BIG)
    assert run_client(server, bystander) == "still here"
    pump_until(server, recorder.all_closed)
    recorder.check_invariants()


def test_idle_zlib_state_is_let_go(make_server: Any) -> None:
    server = make_server(compression=Compression(idle_timeout=0.2, client_no_context_takeover=False))
    recorder = Recorder(server, echo=True)
    go_on = threading.Event()

    def client() -> list[str]:
        with connect(ws_url(server)) as ws:
            ws.send(JSON[:1000])
            first = ws.recv()
            assert go_on.wait(DEADLINE)
            ws.send(JSON[:1000])  # after the server let its zlib state go
            return [str(first), str(ws.recv())]

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: len(recorder.messages) == 1, what="the first message")
    state = driver_of(recorder.opened[0]).ws.deflate
    assert state.holds_state
    pump_until(server, lambda: not state.holds_state, what="the idle zlib state to be let go")
    go_on.set()
    pump_until(server, lambda: not worker.is_alive(), what="the client")
    assert worker.outcome() == [JSON[:1000]] * 2
    pump_until(server, recorder.all_closed)


def test_rsv1_in_send_data_is_refused_where_compression_was_negotiated(server: Server) -> None:
    outcomes: list[Any] = []

    def on_open(client: Client) -> None:
        try:
            client.send_data(b"x", opcode=Opcode.BINARY, rsv1=True)
            outcomes.append("sent")
        except ValueError as exc:
            outcomes.append(str(exc))
        client.close()

    server.on_open = on_open

    def client(extra: str) -> int:
        with open_websocket(server.get_local_ip(), extra=extra) as sock:
            b0, _ = read_raw_frame(sock)
            return b0

    assert run_client(server, client, OFFER) == 0x88  # only the Close
    assert run_client(server, client, "") == 0xC2  # the raw frame, RSV1 and all
    assert "RSV1" in outcomes[0] and outcomes[1] == "sent"


def test_compression_none_declines_every_offer(make_server: Any) -> None:
    server = make_server(compression=None)
    Recorder(server, echo=True)

    def client() -> tuple[bytes, int, bytes]:
        with socket.create_connection(server.get_local_ip()) as sock:
            sock.settimeout(10)
            sock.sendall(handshake_request(extra=OFFER))
            head = read_http_head(sock)
            sock.sendall(client_frame(Opcode.TEXT, deflate(b"x"), rsv=4))
            b0, payload = read_raw_frame(sock)
            return head, b0, payload

    head, b0, payload = run_client(server, client)
    assert head.startswith(b"HTTP/1.1 101 ") and b"sec-websocket-extensions" not in head.lower()
    assert b0 == 0x88 and payload[:2] == close_payload(CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    ("header", "status", "answer"),
    [
        ("Sec-WebSocket-Extensions: permessage-deflate; =broken\r\n", b"400", None),
        ("Sec-WebSocket-Extensions: permessage-deflate; bogus_parameter\r\n", b"101", None),
        (
            "Sec-WebSocket-Extensions: permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10\r\n",
            b"101",
            b"permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        ),
    ],
    ids=["unparseable", "declined", "second-offer"],
)
def test_the_handshake_answers_each_offer(server: Server, header: str, status: bytes, answer: bytes | None) -> None:
    def client() -> bytes:
        with socket.create_connection(server.get_local_ip()) as sock:
            sock.settimeout(10)
            sock.sendall(handshake_request(extra=header))
            return read_http_head(sock)

    head = run_client(server, client)
    assert head.split(b" ")[1] == status, head
    extensions = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-extensions:")]
    assert extensions == ([answer] if answer else [])


def test_close_after_a_large_compressed_send_delivers_everything_first(server: Server) -> None:
    def on_message(client: Client, message: Message) -> None:
        client.send(JSON * 2)
        client.send("after")
        client.close(1000, "bye")

    server.on_message = on_message

    def client() -> tuple[list[bytes], bytes]:
        with open_websocket(server.get_local_ip(), extra=OFFER) as sock:
            sock.sendall(client_frame(Opcode.TEXT, b"go"))
            decompressor = zlib.decompressobj(-15)
            messages = [read_message(sock, decompressor)[1] for _ in range(2)]
            b0, payload = read_raw_frame(sock)
            assert b0 == 0x88
            return messages, payload

    messages, close = run_client(server, client)
    assert messages == [(JSON * 2).encode(), b"after"]
    assert close == close_payload(1000, b"bye")


def test_a_large_message_released_from_behind_a_fragmented_one_goes_out_by_itself(server: Server) -> None:
    def on_message(client: Client, message: Message) -> None:
        client.send_data(b"frag", opcode=Opcode.TEXT, fin=False)
        client.send(JSON * 2)  # waits behind the fragmented message
        client.send_data(b"mented", opcode=Opcode.CONTINUATION, fin=True)  # releases it, and nothing else is sent

    server.on_message = on_message

    def client() -> list[bytes]:
        with open_websocket(server.get_local_ip(), extra=OFFER) as sock:
            sock.sendall(client_frame(Opcode.TEXT, b"go"))
            decompressor = zlib.decompressobj(-15)
            return [read_message(sock, decompressor)[1] for _ in range(2)]

    assert run_client(server, client) == [b"fragmented", (JSON * 2).encode()]
