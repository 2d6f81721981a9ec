"""The upgrade on the HTTP port: on any path or only on configured ones,
routed by path and query, refused with a proper HTTP answer (custom error
pages included), next to pages served on the same port."""

from __future__ import annotations

import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import DEADLINE, Recorder, pump_until, run_client, ws_url
from wsserver import Server


def test_upgrade_on_any_path_by_default_and_routing_by_path(server: Server, recorder: Recorder) -> None:
    server.on_message = lambda client, message: client.send(f"{client.request.path}:{message.data}")

    def client() -> list[str]:
        answers = []
        for path in ("/", "/chat/lobby?name=ann", "/deep/er/path"):
            with connect(ws_url(server, path)) as ws:
                ws.send("hi")
                answers.append(ws.recv(timeout=DEADLINE))
        return answers

    assert run_client(server, client) == ["/:hi", "/chat/lobby:hi", "/deep/er/path:hi"]
    rooms = {client.request.path: client.request.query.get("name", "") for client in recorder.opened}
    assert rooms == {"/": "", "/chat/lobby": "ann", "/deep/er/path": ""}
    pump_until(server, recorder.all_closed)
    recorder.check_invariants()


def test_websocket_paths_limit_where_upgrades_happen(server: Server, recorder: Recorder) -> None:
    server.http_server.websocket_paths = {"/ws"}
    server.http_server.route("/", handler=lambda request: "page")

    def client() -> tuple[int, bool, str]:
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(server, "/")):
            pass
        with connect(ws_url(server, "/ws")) as ws:
            opened = ws.protocol.state.name == "OPEN"
        with urllib.request.urlopen(server.http_server.get_url("/"), timeout=DEADLINE) as response:
            page = response.read().decode()
        return refused.value.response.status_code, opened, page

    assert run_client(server, client) == (404, True, "page")
    pump_until(server, recorder.all_closed)
    assert len(recorder.opened) == 1 and recorder.opened[0].request.path == "/ws"
    recorder.check_invariants()


def test_a_refusal_uses_the_custom_error_page(server: Server, recorder: Recorder) -> None:
    server.http_server.error_pages[403] = lambda request, status: "<h1>Not for you</h1>"
    server.on_upgrade_to_websocket = lambda client, request, response, protocol, origin: response.error_status(403)

    def client() -> tuple[int, bytes, str]:
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(server, "/private")):
            pass
        response = refused.value.response
        return response.status_code, response.body, response.headers["Content-Type"]

    assert run_client(server, client) == (403, b"<h1>Not for you</h1>", "text/html; charset=utf-8")
    assert recorder.opened == [] and server.client_count() == 0
