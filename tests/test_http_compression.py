"""gzip for text answers: negotiated by Accept-Encoding, small bodies left
alone, big ones compressed a slice at a time, static files cached once
compressed or served from a ``.gz`` sibling; over http.client and
headless Chromium."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import run_client
from rawhttp import fetch
from wsserver import Server
from wsserver.http import Headers, Request
from wsserver.http.compression import MIN_SIZE, SLICE, accepts_gzip, compressible

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


@pytest.mark.parametrize(
    "values, accepted",
    [
        (["gzip"], True),
        (["deflate, gzip;q=0.5"], True),
        (["x-gzip"], True),
        (["*"], True),
        (["br", "GZIP"], True),
        (["gzip;q=0"], False),
        (["*, gzip;q=0"], False),
        (["*;q=0"], False),
        (["identity"], False),
        (["gzip;q=nonsense"], False),
        ([], False),
    ],
)
def test_accept_encoding(values: list[str], accepted: bool) -> None:
    request = Request("GET", "/", "HTTP/1.1", Headers([("Accept-Encoding", v) for v in values]))
    assert accepts_gzip(request) is accepted


@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("text/html; charset=utf-8", True),
        ("application/json", True),
        ("application/javascript", True),
        ("image/svg+xml", True),
        ("application/ld+json", True),
        ("text/event-stream", False),
        ("image/png", False),
        ("application/octet-stream", False),
        (None, False),
    ],
)
def test_compressible_types(content_type: str | None, expected: bool) -> None:
    assert compressible(content_type) is expected


@pytest.fixture
def routes(server: Server) -> Server:
    http = server.http_server
    http.route("/page", handler=lambda request: "<!doctype html>" + "<p>hello</p>" * 400)
    http.route("/small", handler=lambda request: "<p>short</p>")
    http.route("/big.json", handler=lambda request: [{"n": n, "name": f"item {n}"} for n in range(20_000)])
    http.route("/bytes", handler=lambda request: b"\0" * 10_000)
    return server


def test_a_page_is_compressed_for_a_client_that_accepts_it(routes: Server) -> None:
    status, headers, body = fetch(routes, "/page", headers=GZIP)
    assert (status, headers["Content-Encoding"], headers["Vary"]) == (200, "gzip", "Accept-Encoding")
    assert int(headers["Content-Length"]) == len(body) < 1000
    assert gzip.decompress(body) == ("<!doctype html>" + "<p>hello</p>" * 400).encode()


def test_no_gzip_without_accept_encoding_but_vary_still(routes: Server) -> None:
    status, headers, body = fetch(routes, "/page")
    assert status == 200 and headers["Content-Encoding"] is None and headers["Vary"] == "Accept-Encoding"
    assert body.startswith(b"<!doctype html>")


def test_small_and_binary_answers_are_left_alone(routes: Server) -> None:
    for path in ("/small", "/bytes"):
        _, headers, _ = fetch(routes, path, headers=GZIP)
        assert headers["Content-Encoding"] is None, path


def test_a_big_answer_is_compressed_as_a_stream(routes: Server) -> None:
    status, headers, body = fetch(routes, "/big.json", headers=GZIP)
    assert (status, headers["Content-Encoding"], headers["Transfer-Encoding"], headers["Content-Length"]) == (200, "gzip", "chunked", None)
    assert json.loads(gzip.decompress(body)) == [{"n": n, "name": f"item {n}"} for n in range(20_000)]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "app.js").write_text("window.loaded = " + json.dumps(list(range(100_000))) + ";\n")
    (root / "tiny.css").write_text("p { color: red }\n")
    (root / "photo.png").write_bytes(os.urandom(50_000))
    return root


def test_a_static_file_is_compressed_once_then_served_from_the_cache(server: Server, site: Path) -> None:
    server.http_server.root = site
    source = (site / "app.js").read_bytes()
    assert len(source) > 10 * SLICE
    _, first, body = fetch(server, "/app.js", headers=GZIP)
    assert (first["Content-Encoding"], first["Transfer-Encoding"], first["Accept-Ranges"]) == ("gzip", "chunked", None)
    assert first["ETag"].startswith('W/"') and first["Content-Type"].endswith("javascript; charset=utf-8")
    assert gzip.decompress(body) == source
    _, second, cached = fetch(server, "/app.js", headers=GZIP)
    assert second["Content-Length"] == str(len(cached)) and gzip.decompress(cached) == source
    # The weak validator still revalidates.
    status, _, _ = fetch(server, "/app.js", headers={**GZIP, "If-None-Match": first["ETag"]})
    assert status == 304


def test_a_304_carries_the_vary_and_etag_of_the_200_it_stands_for(server: Server, site: Path) -> None:
    """RFC 9110 section 15.4.5: a cache updates its stored 200 from the 304,
    so the 304 must say what that 200 said (and no Content-Length unless it
    equals the 200's: section 8.6)."""
    server.http_server.root = site
    for request_headers, compressed in ((GZIP, True), ({}, False)):
        _, full, _ = fetch(server, "/app.js", headers=request_headers)
        status, head, body = fetch(server, "/app.js", headers={**request_headers, "If-None-Match": full["ETag"]})
        assert (status, body, head["Vary"], head["ETag"]) == (304, b"", "Accept-Encoding", full["ETag"])
        assert head["ETag"].startswith('W/"') is compressed
        assert head["Content-Length"] == (None if compressed else full["Content-Length"])
        assert head["Content-Encoding"] is None and head["Content-Type"] is None
    # A file too small to compress, and one of a type that is not: their 200s are never compressed.
    for path, vary in (("/tiny.css", "Accept-Encoding"), ("/photo.png", None)):
        _, full, _ = fetch(server, path, headers=GZIP)
        status, head, _ = fetch(server, path, headers={**GZIP, "If-None-Match": full["ETag"]})
        assert (status, head["Vary"], head["ETag"], head["Content-Length"]) == (304, vary, full["ETag"], full["Content-Length"])


def test_ranges_small_files_and_binary_files_are_served_as_they_are(server: Server, site: Path) -> None:
    server.http_server.root = site
    status, headers, body = fetch(server, "/app.js", headers={**GZIP, "Range": "bytes=0-13"})
    assert (status, body, headers["Content-Encoding"]) == (206, b"window.loaded ", None)
    for path in ("/tiny.css", "/photo.png"):
        _, headers, body = fetch(server, path, headers=GZIP)
        assert headers["Content-Encoding"] is None and body == (site / path[1:]).read_bytes()
    assert (site / "tiny.css").stat().st_size < MIN_SIZE


def test_a_precompressed_sibling_is_served(server: Server, site: Path) -> None:
    server.http_server.root = site
    (site / "app.js.gz").write_bytes(gzip.compress(b"window.loaded = 'from the .gz';\n"))
    _, headers, body = fetch(server, "/app.js", headers=GZIP)
    assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"].endswith("javascript; charset=utf-8")
    assert gzip.decompress(body) == b"window.loaded = 'from the .gz';\n"
    _, headers, body = fetch(server, "/app.js")
    assert headers["Content-Encoding"] is None and body == (site / "app.js").read_bytes()


def test_gzip_can_be_turned_off(routes: Server) -> None:
    routes.http_server.gzip = False
    _, headers, _ = fetch(routes, "/page", headers=GZIP)
    assert headers["Content-Encoding"] is None and headers["Vary"] is None


def test_chromium_reads_compressed_pages_and_scripts(server: Server, site: Path, tmp_path: Path) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server.http_server.root = site
    (site / "index.html").write_text('<!doctype html><title>gz</title>' + "<!-- padding -->" * 200 + '<script src="app.js"></script>')
    seen: list[str | None] = []
    original = server.http_server.handle

    def spy(request: Request) -> Any:
        response = original(request)
        seen.append(response.headers.get("Content-Encoding"))
        return response

    server.http_server.handle = spy  # type: ignore[method-assign]

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(str(server.http_server.get_url()))
            return browser.evaluate(session, "window.loaded.length")

    assert run_client(server, browse, timeout=120.0) == 100_000
    assert seen.count("gzip") >= 2  # the page and the script
