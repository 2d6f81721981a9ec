"""Every row of the aardio API table, against live clients over loopback.

The server is pumped by ``poll()`` on the test's own thread, as a GUI loop
would; the clients (python-websockets' sync client, websocket-client, or a
raw socket where a library would not misbehave on purpose) run on threads.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import socket
import threading
import time

import pytest
import websocket  # websocket-client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import wsserver
from conftest import DEADLINE, Recorder, Worker, pump_until, run_client, ws_url
from rawws import client_frame, handshake_request, open_websocket, read_frame
from wsserver import Client, Message, Server
from wsserver.protocol import Opcode


def connect_and_close(url: str) -> None:
    with connect(url):
        pass


def echo(server: Server) -> None:
    server.on_message = lambda client, message: client.send(message.data)


# -- start / stop / addresses ----------------------------------------------


def test_start_on_a_free_port_and_the_addresses(server: Server, recorder: Recorder) -> None:
    host, port = server.get_local_ip()
    assert host == "127.0.0.1" and port > 0
    assert server.get_url() == f"ws://127.0.0.1:{port}/"
    assert server.get_url("chat") == server.get_url("/chat") == f"ws://127.0.0.1:{port}/chat"

    def client() -> tuple[str, int]:
        with connect(ws_url(server)) as ws:
            name = ws.socket.getsockname()
            ws.send("ready")
            ws.recv()
            return name

    def on_message(c: Client, m: Message) -> None:
        assert server.get_remote_ip(c) == c.remote_address
        c.send(repr(server.get_remote_ip(c)))

    server.on_message = on_message
    sockname = run_client(server, client)
    assert recorder.opened[0].remote_address == sockname
    assert server.get_remote_ip(recorder.opened[0]) == sockname


def test_start_failure_raises_oserror(server: Server) -> None:
    port = server.get_local_ip()[1]
    other = Server()
    with pytest.raises(OSError):
        other.start("127.0.0.1", port)
    assert other.get_url() is None and other.get_local_ip() is None


def test_wildcard_bind_is_shown_as_localhost_or_the_lan_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unit check of the URL rule alone: tests never bind a wildcard address.
    server = Server()
    monkeypatch.setattr(server, "get_local_ip", lambda: ("0.0.0.0", 8080))
    assert server.get_url("x") == "ws://localhost:8080/x"
    assert server.http_server.get_url() == "http://localhost:8080/"
    lan = server.get_url(use_lan_ip=True)
    assert lan.startswith("ws://") and "0.0.0.0" not in lan
    monkeypatch.setattr(server, "get_local_ip", lambda: ("::1", 8080))
    assert server.get_url() == "ws://[::1]:8080/"
    # Dual-stack "::" takes IPv4 too: its LAN URL is the IPv4 address when there is one.
    from wsserver import context

    monkeypatch.setattr(server, "get_local_ip", lambda: ("::", 8080))
    addresses: dict[int, str | None] = {socket.AF_INET: "192.0.2.2", socket.AF_INET6: "2001:db8::2"}
    monkeypatch.setattr(context, "route_address", lambda family: addresses[family])
    assert server.get_url(use_lan_ip=True) == "ws://192.0.2.2:8080/"
    addresses[socket.AF_INET] = None  # no IPv4 route
    assert server.get_url(use_lan_ip=True) == "ws://[2001:db8::2]:8080/"
    assert server.get_url() == "ws://localhost:8080/"
    addresses[socket.AF_INET6] = None  # no route at all
    assert server.get_url(use_lan_ip=True) == "ws://localhost:8080/"


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = Server()
    try:
        server.start("::1", 0)
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    echo(server)
    try:
        def client() -> str:
            with connect(server.get_url()) as ws:
                ws.send("six")
                return ws.recv()

        assert server.get_url().startswith("ws://[::1]:")
        assert run_client(server, client) == "six"
    finally:
        server.stop()


def waiting_clients(server: Server, recorder: Recorder, count: int) -> tuple[list[Worker], list[int | None]]:
    """``count`` clients connected and waiting for a message; each notes the
    code of the Close frame it gets instead."""
    connected = threading.Barrier(count + 1)
    codes: list[int | None] = []

    def client() -> None:
        with connect(ws_url(server)) as ws:
            connected.wait(DEADLINE)
            try:
                ws.recv(timeout=DEADLINE)
            except ConnectionClosed as exc:
                codes.append(exc.rcvd.code if exc.rcvd else None)

    workers = [Worker(client) for _ in range(count)]
    for w in workers:
        w.start()
    pump_until(server, lambda: len(recorder.opened) == count and connected.n_waiting == count)
    connected.wait(DEADLINE)
    return workers, codes


def test_stop_closes_clients_with_1001_runs_hooks_and_frees_the_port(make_server) -> None:
    server = make_server()
    port = server.get_local_ip()[1]
    recorder = Recorder(server)
    order: list[str] = []
    server.before_stop = lambda: order.append("before_stop")
    server.add_listener("stop", lambda: order.append("stop listener"))
    workers, results = waiting_clients(server, recorder, 3)
    server.stop()
    assert order == ["before_stop", "stop listener"]
    recorder.check_invariants()
    for w in workers:
        w.join(DEADLINE)
        w.outcome()
    assert results == [1001, 1001, 1001]
    # The port is free again, and the same server object starts on it.
    server.start("127.0.0.1", port)
    echo(server)

    def again() -> str:
        with connect(ws_url(server)) as ws:
            ws.send("back")
            return ws.recv()

    assert run_client(server, again) == "back"
    server.stop()


# -- sending ---------------------------------------------------------------


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int32), ("y", ctypes.c_int32)]


def test_send_types_text_and_every_bytes_like(server: Server) -> None:
    payloads = ["text é", b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), array.array("H", [1, 2]), Point(3, 4)]

    def on_open(client: Client) -> None:
        for data in payloads:
            assert server.send(client, data) is True

    server.on_open = on_open

    def client() -> list:
        with connect(ws_url(server)) as ws:
            return [ws.recv() for _ in payloads]

    received = run_client(server, client)
    assert received == [
        "text é",
        b"bytes",
        b"bytearray",
        b"memoryview",
        array.array("H", [1, 2]).tobytes(),
        bytes(Point(3, 4)),
    ]


def test_send_to_closed_or_unknown_client_returns_false(server: Server, recorder: Recorder) -> None:
    run_client(server, connect_and_close, ws_url(server))
    pump_until(server, recorder.all_closed)
    gone = recorder.opened[0]
    assert server.send(gone, "x") is False
    assert server.send(gone.id, "x") is False
    assert server.send(12345, "x") is False
    assert server.send_data(gone, b"x") is False
    assert server.client(gone.id) is None
    assert server.is_closed(gone) and server.is_closed(gone.id) and not server.is_connected(gone)


def test_publish_reaches_every_client_and_encodes_once(server: Server, recorder: Recorder) -> None:
    ready = threading.Barrier(6)

    def client() -> list:
        with connect(ws_url(server)) as ws:
            ready.wait(DEADLINE)
            return [ws.recv(timeout=DEADLINE) for _ in range(3)]

    workers = [Worker(client) for _ in range(5)]
    for w in workers:
        w.start()
    pump_until(server, lambda: len(recorder.opened) == 5 and ready.n_waiting == 5)
    ready.wait(DEADLINE)
    assert server.publish("one") is True
    assert server.publish(b"two") is True
    assert server.publish(bytearray(b"three")) is True
    pump_until(server, lambda: not any(w.is_alive() for w in workers))
    assert [w.outcome() for w in workers] == [["one", b"two", b"three"]] * 5


def test_publish_with_no_clients_is_true(server: Server) -> None:
    assert server.publish("nobody") is True


def test_publish_to_a_group(server: Server, recorder: Recorder) -> None:
    """``to=`` picks the clients (or ids); one that is gone is passed over."""

    def client(name: str) -> list:
        with connect(ws_url(server)) as ws:
            ws.send(name)
            first = ws.recv(timeout=DEADLINE)
            return [first] if first == "to all" else [first, ws.recv(timeout=DEADLINE)]

    workers = {name: Worker(client, name) for name in "abc"}
    for w in workers.values():
        w.start()
    pump_until(server, lambda: len(recorder.messages) == 3)
    clients = {message.data: client for client, message in recorder.messages}
    assert server.publish("to a and b", to=[clients["a"], clients["b"].id, 12345]) is True
    assert server.publish("to all") is True
    pump_until(server, lambda: not any(w.is_alive() for w in workers.values()))
    assert {name: w.outcome() for name, w in workers.items()} == {"a": ["to a and b", "to all"], "b": ["to a and b", "to all"], "c": ["to all"]}


def test_send_data_raw_frames(server: Server) -> None:
    def on_open(client: Client) -> None:
        # One text message in three frames, with a ping in between.
        assert server.send_data(client, "frag", opcode=Opcode.TEXT, fin=False)
        assert server.send_data(client, b"men", opcode=Opcode.CONTINUATION, fin=False)
        assert client.send_data(b"ted", opcode=Opcode.CONTINUATION)
        assert server.send_data(client, b"binary")  # defaults: binary, final

    server.on_open = on_open

    def client() -> list:
        with connect(ws_url(server)) as ws:
            return [ws.recv(), ws.recv()]

    assert run_client(server, client) == ["fragmented", b"binary"]
    with pytest.raises(ValueError):
        server.send_data(1, b"x" * 126, opcode=Opcode.PING)
    with pytest.raises(ValueError):
        server.send_data(1, b"x", opcode=16)


def test_send_data_with_rsv_bits_reaches_the_wire(server: Server) -> None:
    server.on_open = lambda client: client.send_data(b"x", rsv1=True, rsv3=True)

    def client() -> int:
        with open_websocket(server.get_local_ip()) as sock:
            sock.settimeout(DEADLINE)
            b0 = sock.recv(1)[0]
            return b0

    assert run_client(server, client) == 0x80 | 0x40 | 0x10 | Opcode.BINARY


# -- close and state queries ----------------------------------------------


def test_server_close_with_code_and_reason(server: Server, recorder: Recorder) -> None:
    server.on_message = lambda client, message: server.close(client, 4000, "done here")

    def client() -> tuple:
        with connect(ws_url(server)) as ws:
            ws.send("close me")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=DEADLINE)
            return info.value.rcvd.code, info.value.rcvd.reason

    assert run_client(server, client) == (4000, "done here")
    pump_until(server, recorder.all_closed)
    client_ = recorder.opened[0]
    # The client echoed the Close frame; on_close saw the echo.
    assert [(code, reason) for _, code, reason in recorder.closes] == [(4000, "done here")]
    assert (client_.close_code, client_.close_reason) == (4000, "done here")
    recorder.check_invariants()


def test_client_close_runs_on_close_then_on_client_closed_once(server: Server, recorder: Recorder) -> None:
    order: list[str] = []
    server.on_close = lambda c, code, reason: order.append(f"close {code} {reason}")
    server.add_listener("close", lambda c: order.append("close listener"))
    server.on_client_closed = lambda c: order.append("closed")

    def client() -> None:
        ws = websocket.create_connection(ws_url(server))
        ws.close(status=4321, reason=b"bye")

    run_client(server, client)
    pump_until(server, lambda: "closed" in order)
    assert order == ["close 4321 bye", "close listener", "closed"]


def test_client_count_is_connected_and_client_lookup(server: Server) -> None:
    seen: dict[str, object] = {}

    def on_upgrade(client: Client, request, response, protocol, origin) -> None:
        # Connecting clients count, but are not connected yet.
        seen["count while connecting"] = server.client_count()
        seen["connected while connecting"] = server.is_connected(client)

    def on_open(client: Client) -> None:
        seen["count"] = server.client_count()
        seen["lookup"] = server.client(client.id) is client
        seen["connected"] = server.is_connected(client) and client.is_connected
        seen["closed"] = server.is_closed(client)
        seen["clients"] = server.clients() == [client]

    def on_close(client: Client, code: int, reason: str) -> None:
        # Closing: still counted, no longer able to send.
        seen["count while closing"] = server.client_count()
        seen["connected while closing"] = server.is_connected(client)

    server.on_upgrade_to_websocket = on_upgrade
    server.on_open = on_open
    server.on_close = on_close
    server.on_client_closed = lambda c: seen.setdefault("count after", server.client_count())
    run_client(server, connect_and_close, ws_url(server))
    pump_until(server, lambda: "count after" in seen)
    assert seen == {
        "count while connecting": 1,
        "connected while connecting": False,
        "count": 1,
        "lookup": True,
        "connected": True,
        "closed": False,
        "clients": True,
        "count while closing": 1,
        "connected while closing": False,
        "count after": 0,
    }


def test_client_ids_are_unique_and_plain_http_does_not_count(server: Server, recorder: Recorder) -> None:
    server.http_server.route("/hello", handler=lambda request: "hi")

    def clients() -> str:
        for _ in range(3):
            connect_and_close(ws_url(server))
        import urllib.request

        with urllib.request.urlopen(server.http_server.get_url("hello"), timeout=DEADLINE) as response:
            return response.read().decode()

    assert run_client(server, clients) == "hi"
    pump_until(server, recorder.all_closed)
    assert len({c.id for c in recorder.opened}) == 3
    recorder.check_invariants()


# -- callbacks -------------------------------------------------------------


def test_on_message_types(server: Server, recorder: Recorder) -> None:
    def client() -> None:
        with connect(ws_url(server)) as ws:
            ws.send("héllo")
            ws.send(b"\x00\x01")
            ws.send("done")
            ws.recv()

    server.on_message = lambda c, m: recorder.messages.append((c, m)) or (m.data == "done" and c.send("ok"))
    run_client(server, client)
    assert [(m.type, m.data) for _, m in recorder.messages] == [(1, "héllo"), (2, b"\x00\x01"), (1, "done")]
    assert recorder.messages[0][1].is_text


def test_on_fragment_receives_each_frame(server: Server) -> None:
    fragments: list[tuple[int, object, bool]] = []
    messages: list[Message] = []
    server.on_message = lambda c, m: messages.append(m)

    def on_fragment(client: Client, fragment) -> None:
        fragments.append((fragment.type, fragment.data, fragment.fin))
        if sum(fin for _, _, fin in fragments) == 2:
            client.send("got both")

    server.on_fragment = on_fragment

    def client() -> str:
        with connect(ws_url(server)) as ws:
            # websockets sends an iterable as fragments, then an empty final frame.
            ws.send(["ab", "cé"])
            ws.send([b"a", b"b"])
            return ws.recv()

    assert run_client(server, client) == "got both"
    assert fragments == [(1, "ab", False), (0, "cé", False), (0, "", True), (2, b"a", False), (0, b"b", False), (0, b"", True)]
    assert messages == []


def test_fragments_are_joined_without_on_fragment(server: Server) -> None:
    echo(server)

    def client() -> list:
        with connect(ws_url(server)) as ws:
            ws.send(["frag", "mented ", "é"])
            ws.send([b"\x01", b"\x02"])
            return [ws.recv(), ws.recv()]

    assert run_client(server, client) == ["fragmented é", b"\x01\x02"]


def test_exception_in_a_callback_goes_to_on_error_and_the_connection_survives(server: Server, recorder: Recorder) -> None:
    def on_message(client: Client, message: Message) -> None:
        if message.data == "boom":
            raise RuntimeError("application bug")
        client.send(message.data)

    server.on_message = on_message

    def client() -> str:
        with connect(ws_url(server)) as ws:
            ws.send("boom")
            ws.send("still here")
            return ws.recv()

    assert run_client(server, client) == "still here"
    assert [type(exc) for _, exc in recorder.errors] == [RuntimeError]
    assert recorder.errors[0][0] is recorder.opened[0]


def test_protocol_error_goes_to_on_error_and_closes_with_its_code(server: Server, recorder: Recorder) -> None:
    def client() -> tuple:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(client_frame(Opcode.TEXT, b"\xff\xfe"))
            opcode, _, payload = read_frame(sock)
            rest = sock.recv(10)
            return opcode, int.from_bytes(payload[:2], "big"), rest

    assert run_client(server, client) == (Opcode.CLOSE, 1007, b"")
    pump_until(server, recorder.all_closed)
    (client_, exc), = recorder.errors
    assert isinstance(exc, wsserver.ProtocolError) and exc.close_code == 1007
    assert client_.close_code == 1007
    recorder.check_invariants()


def test_ping_is_answered_and_unsolicited_pong_accepted(server: Server) -> None:
    echo(server)

    def client() -> tuple:
        with open_websocket(server.get_local_ip()) as sock:
            sock.sendall(client_frame(Opcode.PONG, b"client heartbeat") + client_frame(Opcode.PING, b"are you there"))
            pong = read_frame(sock)
            sock.sendall(client_frame(Opcode.TEXT, b"after"))
            return pong, read_frame(sock)

    assert run_client(server, client) == ((Opcode.PONG, True, b"are you there"), (Opcode.TEXT, True, b"after"))


# -- the upgrade hook ------------------------------------------------------


def test_upgrade_hook_sees_the_request_and_picks_a_subprotocol(server: Server, recorder: Recorder) -> None:
    server.origins = ["http://app.test"]  # a page of the application's, served elsewhere
    seen = {}

    def on_upgrade(client, request, response, protocol, origin) -> None:
        seen.update(path=request.path, query=request.query, agent=request.headers["user-agent"], protocol=protocol, origin=origin)
        response.headers["Sec-WebSocket-Protocol"] = "chat.v2"
        response.headers["X-Room"] = request.query["room"]

    server.on_upgrade_to_websocket = on_upgrade

    def client() -> tuple:
        with connect(
            ws_url(server, "/rooms/main?room=42"),
            subprotocols=["chat.v1", "chat.v2"],
            origin="http://app.test",
            user_agent_header="test-agent",
        ) as ws:
            return ws.subprotocol, ws.response.headers["X-Room"]

    assert run_client(server, client) == ("chat.v2", "42")
    assert seen == {"path": "/rooms/main", "query": {"room": "42"}, "agent": "test-agent", "protocol": ["chat.v1", "chat.v2"], "origin": "http://app.test"}
    assert recorder.opened[0].subprotocol == "chat.v2"
    assert recorder.opened[0].request.path == "/rooms/main"


def test_upgrade_refused_with_a_status(server: Server, recorder: Recorder) -> None:
    server.on_upgrade_to_websocket = lambda c, req, resp, protocol, origin: resp.error_status(403, "not you")

    def client() -> tuple:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(server))
        return info.value.response.status_code, info.value.response.body

    status, body = run_client(server, client)
    assert status == 403 and b"not you" in body
    assert recorder.opened == [] and server.client_count() == 0
    recorder.check_invariants()


def test_upgrade_refused_by_closing(server: Server, recorder: Recorder) -> None:
    server.on_upgrade_to_websocket = lambda c, req, resp, protocol, origin: resp.close()

    def client() -> bytes:
        with socket.create_connection(server.get_local_ip()) as sock:
            sock.settimeout(DEADLINE)
            sock.sendall(handshake_request())
            return sock.recv(100)

    assert run_client(server, client) == b""
    assert recorder.opened == [] and server.client_count() == 0


def test_upgrade_hook_that_raises_refuses_with_500(server: Server, recorder: Recorder) -> None:
    def on_upgrade(*args) -> None:
        raise KeyError("bug")

    server.on_upgrade_to_websocket = on_upgrade

    def client() -> int:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(server))
        return info.value.response.status_code

    assert run_client(server, client) == 500
    assert [type(e) for _, e in recorder.errors] == [KeyError]
    recorder.check_invariants()


def test_subprotocol_not_offered_is_refused(server: Server, recorder: Recorder) -> None:
    server.on_upgrade_to_websocket = lambda c, req, resp, protocol, origin: resp.headers.__setitem__("Sec-WebSocket-Protocol", "mine")

    def client() -> int:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(server), subprotocols=["theirs"])
        return info.value.response.status_code

    assert run_client(server, client) == 500
    assert isinstance(recorder.errors[0][1], ValueError)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (handshake_request().replace(b"Version: 13", b"Version: 8"), b"426"),
        (handshake_request(key="short"), b"400"),
        (handshake_request().replace(b"Upgrade: websocket\r\nConnection: Upgrade", b"Upgrade: websocket\r\nConnection: keep-alive"), b"400"),
        (handshake_request().replace(b"GET", b"POST"), b"405"),
    ],
    ids=["version", "key", "connection", "method"],
)
def test_bad_handshakes_get_an_http_error_with_a_reason(server: Server, recorder: Recorder, request_bytes: bytes, status: bytes) -> None:
    def client() -> tuple:
        with socket.create_connection(server.get_local_ip()) as sock:
            sock.settimeout(DEADLINE)
            sock.sendall(request_bytes)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    response = run_client(server, client)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status
    assert body.strip()  # says what was wrong
    if status == b"426":
        assert b"Sec-WebSocket-Version: 13" in head
    assert recorder.opened == [] and server.client_count() == 0


# -- translate_message -----------------------------------------------------


def test_translate_message_swallows_and_can_be_set_once(server: Server, recorder: Recorder) -> None:
    def translate(client: Client, message: Message) -> bool:
        if isinstance(message.data, str) and message.data.startswith("{"):
            client.send("rpc handled")
            return True
        return False

    server.translate_message = translate
    with pytest.raises(AttributeError):
        server.translate_message = lambda c, m: False
    assert server.translate_message is translate

    def client() -> str:
        with connect(ws_url(server)) as ws:
            ws.send('{"jsonrpc": "2.0"}')
            reply = ws.recv()
            ws.send("plain")
            ws.send("{again}")
            ws.recv()
            return reply

    assert run_client(server, client) == "rpc handled"
    assert [m.data for _, m in recorder.messages] == ["plain"]


# -- heartbeat -------------------------------------------------------------


def test_heartbeat_pings_idle_clients_with_its_data(make_server) -> None:
    server = make_server(heartbeat_interval=0.2, heartbeat_data="hb")

    def client() -> tuple:
        with open_websocket(server.get_local_ip()) as sock:
            first = read_frame(sock)
            sock.sendall(client_frame(Opcode.PONG, first[2]))
            return first, read_frame(sock)

    assert run_client(server, client) == ((Opcode.PING, True, b"hb"), (Opcode.PING, True, b"hb"))


def test_pong_heartbeat_type(make_server) -> None:
    server = make_server(heartbeat_interval=0.2, heartbeat_type=Opcode.PONG, heartbeat_timeout=0.2)
    recorder = Recorder(server)

    def client() -> list:
        with open_websocket(server.get_local_ip()) as sock:
            # One-way pongs need no answer: the client stays connected.
            return [read_frame(sock) for _ in range(3)]

    assert run_client(server, client) == [(Opcode.PONG, True, b"")] * 3
    assert recorder.errors == []


def test_heartbeat_timeout_closes_a_silent_client(make_server) -> None:
    server = make_server(heartbeat_interval=0.1, heartbeat_timeout=0.2)
    recorder = Recorder(server)

    def client() -> list:
        frames = []
        with open_websocket(server.get_local_ip()) as sock:
            try:
                while True:
                    frames.append(read_frame(sock)[0])
            except ConnectionError:
                return frames

    frames = run_client(server, client)
    assert frames[0] == Opcode.PING and frames[-1] == Opcode.CLOSE
    pump_until(server, recorder.all_closed)
    assert recorder.opened[0].close_code == 1011
    assert isinstance(recorder.errors[0][1], TimeoutError)
    recorder.check_invariants()


def test_a_client_that_answers_pings_stays_connected(make_server) -> None:
    server = make_server(heartbeat_interval=0.05, heartbeat_timeout=0.5)
    recorder = Recorder(server)
    echo(server)
    go = threading.Event()

    def client() -> str:
        with connect(ws_url(server)) as ws:  # answers pings by itself
            go.wait(DEADLINE)
            ws.send("alive")
            return ws.recv(timeout=DEADLINE)

    worker = Worker(client)
    worker.start()
    pump_until(server, lambda: recorder.opened)
    # Let the client idle across a dozen heartbeat intervals, more than
    # the heartbeat timeout, before it speaks.
    idle_until = server.reactor.time() + 0.6
    pump_until(server, lambda: server.reactor.time() >= idle_until)
    go.set()
    pump_until(server, lambda: not worker.is_alive())
    assert worker.outcome() == "alive"
    assert recorder.errors == []


def test_heartbeat_disabled_with_minus_one() -> None:
    server = Server(heartbeat_interval=-1)
    assert server.heartbeat_interval is None
    with pytest.raises(ValueError):
        Server(heartbeat_type=1)


def test_stop_from_a_callback_runs_no_callback_afterwards(server: Server, recorder: Recorder) -> None:
    after_stop: list[str] = []

    def on_message(client: Client, message: Message) -> None:
        if not server.started:
            after_stop.append(message.data)
        elif message.data == "stop":
            server.stop()

    server.on_message = on_message

    def client() -> None:
        with open_websocket(server.get_local_ip()) as sock:
            # Both messages arrive in one read: the second must not be
            # delivered once the first has stopped the server.
            sock.sendall(client_frame(Opcode.TEXT, b"stop") + client_frame(Opcode.TEXT, b"late"))
            while sock.recv(4096):
                pass

    run_client(server, client)
    assert after_stop == []
    recorder.check_invariants()


def test_shutdown_releases_the_reactor() -> None:
    server = Server()
    server.start("127.0.0.1", 0)
    server.shutdown()
    assert server.reactor.closed and not server.started
    with pytest.raises(RuntimeError):
        server.start("127.0.0.1", 0)
    server.shutdown()  # twice is harmless


def test_lifecycle_listeners_follow_every_client_beside_the_callbacks(make_server) -> None:
    server = make_server()
    order: list[str] = []
    server.on_open = lambda c: order.append("on_open")
    server.on_client_closed = lambda c: order.append("on_client_closed")
    server.before_stop = lambda: order.append("before_stop")
    for n in (1, 2):
        server.add_listener("open", lambda c, n=n: order.append(f"open {n} #{c.id}"))
        server.add_listener("close", lambda c, n=n: order.append(f"close {n} #{c.id}"))
        server.add_listener("stop", lambda n=n: order.append(f"stop {n}"))
    removed = lambda c: order.append("removed")  # noqa: E731
    server.add_listener("open", removed)
    server.remove_listener("open", removed)
    server.remove_listener("open", removed)  # not listening any more: nothing happens
    with pytest.raises(ValueError):
        server.add_listener("opened", removed)  # type: ignore[arg-type]

    def client() -> None:
        with connect(ws_url(server)) as ws:
            ws.send("hi")

    run_client(server, client)
    pump_until(server, lambda: "on_client_closed" in order)
    server.stop()
    assert order == ["open 1 #1", "open 2 #1", "on_open", "close 1 #1", "close 2 #1", "on_client_closed", "before_stop", "stop 1", "stop 2"]


def test_the_old_extension_hooks_still_work_with_a_warning(server: Server) -> None:
    closed: list[int] = []
    stopped: list[bool] = []
    with pytest.warns(DeprecationWarning, match="add_listener\\('close'"):
        server._on_client_closed = lambda c: closed.append(c.id)
    with pytest.warns(DeprecationWarning, match="add_listener\\('stop'"):
        server._before_stop = lambda: stopped.append(True)
    def client() -> None:
        with connect(ws_url(server)):
            pass

    run_client(server, client)
    pump_until(server, lambda: closed == [1])
    server.stop()
    assert stopped == [True]


@pytest.mark.parametrize("call", ["send", "publish", "send_data", "close", "stop"])
def test_calls_from_a_thread_that_does_not_poll_are_refused(server: Server, call: str) -> None:
    recorder = Recorder(server)
    calls = {
        "send": lambda: server.send(1, "x"),
        "publish": lambda: server.publish("x"),
        "send_data": lambda: server.send_data(1, b"x"),
        "close": lambda: server.close(1),
        "stop": lambda: server.stop(),
    }
    server.poll(0)  # this thread polls
    worker = Worker(calls[call])
    worker.start()
    worker.join(DEADLINE)
    with pytest.raises(RuntimeError, match=rf"Server\.{call}\(\) called from a thread that does not poll"):
        worker.outcome()
    assert server.started and not recorder.errors
    calls[call]()  # from the polling thread it is fine


def test_stop_without_waiting_finishes_across_poll_steps(make_server) -> None:
    """stop(wait=False) returns at once; the closing handshakes finish in
    ordinary poll() steps, then on_stopped runs, after every on_client_closed."""
    server = make_server()
    recorder = Recorder(server)
    order: list[str] = []
    server.on_client_closed = lambda c: order.append(f"closed {c.id}")
    server.on_stopped = lambda: order.append("stopped")
    workers, codes = waiting_clients(server, recorder, 3)
    server.stop(wait=False)
    assert server.stopping and order == []  # nothing waited for
    pump_until(server, lambda: order and order[-1] == "stopped", what="the stop to finish")
    assert sorted(order[:-1]) == ["closed 1", "closed 2", "closed 3"]
    assert not server.stopping and not server.started
    pump_until(server, lambda: not any(w.is_alive() for w in workers))
    assert codes == [1001, 1001, 1001]


def test_stop_without_waiting_drops_silent_clients_at_the_deadline(make_server) -> None:
    server = make_server()
    stopped: list[float] = []
    server.on_stopped = lambda: stopped.append(time.monotonic())
    done = threading.Event()

    def silent_clients() -> None:
        with contextlib.ExitStack() as stack:
            for _ in range(5):
                stack.enter_context(open_websocket(server.get_local_ip()))
            done.wait(DEADLINE)  # never answering the server's Close frame

    worker = Worker(silent_clients)
    worker.start()
    pump_until(server, lambda: server.client_count() == 5)
    started = time.monotonic()
    server.stop(timeout=0.3, wait=False)
    pump_until(server, lambda: stopped, what="on_stopped")
    done.set()
    assert stopped[0] - started >= 0.3
    assert server.client_count() == 0 and server.connection_count() == 0
    worker.join(DEADLINE)
