"""Routes, what handlers return, the request they see, errors in handlers,
the SPA fallback, custom error pages and get_url, over http.client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_client
from rawhttp import exchange, fetch
from wsserver import Server
from wsserver.http import Request, Response


@pytest.mark.parametrize(
    "result, status, content_type, body",
    [
        ("plain words", 200, "text/plain; charset=utf-8", b"plain words"),
        ("<p>html</p>", 200, "text/html; charset=utf-8", b"<p>html</p>"),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        ({"a": [1, "é"]}, 200, "application/json", '{"a":[1,"é"]}'.encode()),
        ([1, 2], 200, "application/json", b"[1,2]"),
        (Response("made", 201, {"X-Made": "yes"}), 201, "text/plain; charset=utf-8", b"made"),
        (None, 204, None, b""),
    ],
)
def test_handler_results(server: Server, result: Any, status: int, content_type: str | None, body: bytes) -> None:
    server.http_server.route("/r", handler=lambda request: result)
    got_status, headers, got_body = fetch(server, "/r")
    assert (got_status, got_body) == (status, body)
    assert headers.get("Content-Type") == content_type
    if isinstance(result, Response):
        assert headers["X-Made"] == "yes"


def test_the_request_a_handler_sees(server: Server) -> None:
    seen: dict[str, Any] = {}

    @server.http_server.route("/api/state", methods=("GET", "POST"))
    def state(request: Request) -> dict:
        seen.update(
            method=request.method,
            path=request.path,
            query=request.query,
            token=request.headers.get("x-TOKEN"),
            body=request.body,
            client=request.client_address,
        )
        return {"ok": True}

    status, _, body = fetch(server, "/api/state?x=1&y=%C3%A9&x=2", "POST", b'{"v": 3}', {"X-Token": "t0k"})
    assert (status, json.loads(body)) == (200, {"ok": True})
    assert seen["method"] == "POST" and seen["path"] == "/api/state"
    assert seen["query"] == {"x": "2", "y": "é"}
    assert seen["token"] == "t0k" and seen["body"] == b'{"v": 3}'
    assert seen["client"][0] == "127.0.0.1"


def test_a_chunked_request_body_is_decoded(server: Server) -> None:
    server.http_server.route("/upload", methods=("POST",), handler=lambda request: request.body)
    port = server.get_local_ip()[1]
    request = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    (response,) = run_client(server, exchange, port, request)
    assert (response.status, response.body) == (200, b"hello world")


def test_a_raising_handler_gives_500_and_on_error(server: Server) -> None:
    errors: list[tuple[Any, BaseException]] = []
    server.on_error = lambda client, exc: errors.append((client, exc))

    @server.http_server.route("/boom")
    def boom(request: Request) -> str:
        raise RuntimeError("handler failed")

    status, _, body = fetch(server, "/boom")
    assert status == 500 and body.startswith(b"500 Internal Server Error")
    assert len(errors) == 1 and errors[0][0] is None and str(errors[0][1]) == "handler failed"
    assert fetch(server, "/boom")[0] == 500  # the server keeps serving


def test_wrong_method_is_405_with_allow_and_unknown_method_501(server: Server) -> None:
    server.http_server.route("/thing", methods=("GET", "PUT"), handler=lambda request: "ok")
    status, headers, _ = fetch(server, "/thing", "DELETE")
    assert status == 405 and headers["Allow"] == "GET, HEAD, PUT"
    assert fetch(server, "/thing", "HEAD")[0] == 200
    assert fetch(server, "/thing", "BREW")[0] == 501


def test_no_route_and_no_root_is_404(server: Server) -> None:
    assert fetch(server, "/")[0] == 404


def test_routes_come_before_static_files(server: Server, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("file")
    (tmp_path / "other.txt").write_text("other file")
    server.http_server.root = tmp_path
    server.http_server.route("/", handler=lambda request: "route")
    assert fetch(server, "/")[2] == b"route"
    assert fetch(server, "/other.txt")[2] == b"other file"


def test_spa_fallback_serves_the_index_for_unknown_page_paths(server: Server, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<div id=app></div>")
    (tmp_path / "app.js").write_text("run()")
    server.http_server.root = tmp_path
    server.http_server.fallback = "index.html"
    status, headers, body = fetch(server, "/users/42/profile")
    assert (status, body) == (200, b"<div id=app></div>")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert fetch(server, "/app.js")[2] == b"run()"
    assert fetch(server, "/missing.js")[0] == 404  # an asset, not a page
    assert fetch(server, "/users/42", "POST")[0] == 404


def test_custom_error_pages(server: Server, tmp_path: Path) -> None:
    (tmp_path / "404.html").write_text("<h1>Lost?</h1>")
    server.http_server.root = tmp_path
    pages = server.http_server.error_pages
    pages[404] = "404.html"
    pages[500] = lambda request, status: {"error": status, "path": request.path}
    pages[400] = lambda request, status: f"bad: {request}"
    pages[405] = lambda request, status: Response("teapot", 418)
    server.on_error = lambda client, exc: None
    server.http_server.route("/boom", handler=lambda request: 1 / 0)
    server.http_server.route("/only-get", handler=lambda request: "ok")

    status, headers, body = fetch(server, "/nowhere")
    assert (status, body) == (404, b"<h1>Lost?</h1>") and headers["Content-Type"] == "text/html; charset=utf-8"
    status, headers, body = fetch(server, "/boom")
    assert status == 500 and json.loads(body) == {"error": 500, "path": "/boom"}
    assert fetch(server, "/only-get", "POST")[:3:2] == (418, b"teapot")  # a Response keeps its status
    port = server.get_local_ip()[1]
    (response,) = run_client(server, exchange, port, b"NOT A REQUEST\r\n\r\n")
    assert (response.status, response.body) == (400, b"bad: None")  # unparsed: no request


def test_a_route_returning_an_iterable_streams_it_chunked(server: Server) -> None:
    server.http_server.route("/stream", handler=lambda request: Response(iter([b"one,", b"two,", b"three"])))
    status, headers, body = fetch(server, "/stream")
    assert (status, body) == (200, b"one,two,three")
    assert headers["Transfer-Encoding"] == "chunked"


def test_get_url(server: Server) -> None:
    port = server.get_local_ip()[1]
    http_server = server.http_server
    assert http_server.get_url() == f"http://127.0.0.1:{port}/"
    assert http_server.get_url("/app/index.html") == http_server.get_url("app/index.html") == f"http://127.0.0.1:{port}/app/index.html"
    assert http_server.get_url("x", use_lan_ip=True) == f"http://127.0.0.1:{port}/x"  # a loopback bind stays loopback
    server.http_server.route("/hello", handler=lambda request: "hi")
    assert fetch(server, "/hello")[2] == b"hi"
    assert Server().http_server.get_url() is None


def test_path_parameters_reach_the_handler_as_keywords(server: Server) -> None:
    http = server.http_server
    http.route("/files/{name}", handler=lambda request, name: {"file": name, "params": request.path_params})
    http.route("/items/{item_id:int}", methods=("GET", "DELETE"), handler=lambda request, item_id: {"id": item_id, "double": item_id * 2})
    http.route("/items/new", handler=lambda request: "the exact path wins")
    http.route("/docs/{rest:path}", handler=lambda request, rest: {"rest": rest})
    http.route("/{a}/and/{b}", handler=lambda request, a, b: [a, b])

    def get(path: str, method: str = "GET") -> tuple[int, Any]:
        status, headers, body = fetch(server, path, method)
        return status, json.loads(body) if headers.get("Content-Type") == "application/json" else body

    assert get("/files/r%C3%A9sum%C3%A9.txt") == (200, {"file": "résumé.txt", "params": {"name": "résumé.txt"}})
    assert get("/items/42") == (200, {"id": 42, "double": 84})
    assert get("/items/42", "DELETE") == (200, {"id": 42, "double": 84})
    assert get("/items/42", "POST")[0] == 405
    assert get("/items/new") == (200, b"the exact path wins")
    assert get("/items/abc")[0] == 404  # not digits: no route
    assert get("/files/a/b")[0] == 404  # {name} is one segment
    assert get("/docs/guide/intro.html") == (200, {"rest": "guide/intro.html"})
    assert get("/x/and/y") == (200, ["x", "y"])


def test_a_route_pattern_that_cannot_work_is_refused_at_once(server: Server) -> None:
    with pytest.raises(ValueError, match="unknown parameter kind 'float'"):
        server.http_server.route("/n/{x:float}", handler=lambda request, x: x)
    with pytest.raises(ValueError, match="appears twice"):
        server.http_server.route("/{x}/{x}", handler=lambda request, x: x)


def test_registering_a_pattern_again_replaces_it(server: Server) -> None:
    server.http_server.route("/p/{n}", handler=lambda request, n: "first")
    server.http_server.route("/p/{n}", handler=lambda request, n: "second")
    assert fetch(server, "/p/1")[2] == b"second"
