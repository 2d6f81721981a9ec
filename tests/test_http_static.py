"""Static files from the document root, over real sockets with http.client
and curl: types, index files, validators and 304, byte ranges, HEAD, and a
1 GiB download that never holds a poll step."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DEADLINE, count_polls, run_client
from rawhttp import fetch
from wsserver import Request, Response, Server

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.fixture
def site(tmp_path: Path, server: Server) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_text("<!doctype html><title>home</title>é", encoding="utf-8")
    (root / "app.js").write_text("console.log('hi');\n")
    (root / "style.css").write_text("body { color: red }\n")
    (root / "data.json").write_text('{"a": 1}')
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "blob.bin").write_bytes(PAYLOAD)
    (root / "zero.txt").write_bytes(b"")
    (root / "docs" / "index.html").write_text("<p>docs</p>")
    (root / "docs" / "note.txt").write_text("a note\n")
    server.http_server.root = root
    return root


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/image.png", "image/png"),
        ("/blob.bin", "application/octet-stream"),
        ("/docs/note.txt", "text/plain; charset=utf-8"),
    ],
)
def test_content_types(server: Server, site: Path, path: str, content_type: str) -> None:
    status, headers, body = fetch(server, path)
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert body == (site / path.lstrip("/")).read_bytes()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Server"] == "wsserver" and headers["Date"].endswith(" GMT")


def test_directory_index_and_the_slash_redirect(server: Server, site: Path) -> None:
    status, headers, body = fetch(server, "/")
    assert status == 200 and "home" in body.decode()
    status, headers, body = fetch(server, "/docs/")
    assert (status, body) == (200, b"<p>docs</p>")
    status, headers, _ = fetch(server, "/docs?x=1")
    assert status == 301 and headers["Location"] == "/docs/?x=1"


def test_no_directory_listing_unless_enabled(server: Server, site: Path) -> None:
    (site / "docs" / "index.html").unlink()
    assert fetch(server, "/docs/")[0] == 403
    server.http_server.directory_listing = True
    status, headers, body = fetch(server, "/docs/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<a href="note.txt">note.txt</a>' in body


def test_head_has_the_headers_and_no_body(server: Server, site: Path) -> None:
    status, headers, body = fetch(server, "/blob.bin", "HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(PAYLOAD))


def test_missing_and_hidden_files_are_404(server: Server, site: Path) -> None:
    (site / ".env").write_text("SECRET=1")
    assert fetch(server, "/nothing.html")[0] == 404
    status, _, body = fetch(server, "/.env")
    assert status == 404 and b"SECRET" not in body


def test_non_get_methods_on_files_are_405_with_allow(server: Server, site: Path) -> None:
    status, headers, _ = fetch(server, "/app.js", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert fetch(server, "/nothing.js", "DELETE")[0] == 404


def test_etag_and_last_modified_give_304(server: Server, site: Path) -> None:
    status, headers, _ = fetch(server, "/app.js")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"') and headers["Cache-Control"] == "no-cache"
    status, headers304, body = fetch(server, "/app.js", headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    # Content-Length, if sent, must be the 200's (RFC 9110 section 8.6).
    assert headers304["ETag"] == etag and headers304["Content-Length"] == headers["Content-Length"]
    assert fetch(server, "/app.js", headers={"If-None-Match": f'"other", W/{etag}'})[0] == 304
    assert fetch(server, "/app.js", headers={"If-None-Match": '"other"'})[0] == 200
    assert fetch(server, "/app.js", headers={"If-Modified-Since": modified})[0] == 304
    assert fetch(server, "/app.js", headers={"If-Modified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"})[0] == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 section 13.2.2).
    assert fetch(server, "/app.js", headers={"If-None-Match": '"other"', "If-Modified-Since": modified})[0] == 200
    # A changed file has a new validator.
    os.utime(site / "app.js", (time.time() + 5, time.time() + 5))
    assert fetch(server, "/app.js", headers={"If-None-Match": etag})[0] == 200


def test_if_match_and_if_unmodified_since_give_412(server: Server, site: Path) -> None:
    etag = fetch(server, "/app.js")[1]["ETag"]
    assert fetch(server, "/app.js", headers={"If-Match": etag})[0] == 200
    assert fetch(server, "/app.js", headers={"If-Match": '"stale"'})[0] == 412
    assert fetch(server, "/app.js", headers={"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"})[0] == 412


def test_cache_control_is_configurable(server: Server, site: Path) -> None:
    server.http_server.cache_control = "public, max-age=3600"
    assert fetch(server, "/style.css")[1]["Cache-Control"] == "public, max-age=3600"
    server.http_server.cache_control = None
    assert "Cache-Control" not in fetch(server, "/style.css")[1]


@pytest.mark.parametrize(
    "range_header, start, end",
    [("bytes=0-9", 0, 9), ("bytes=1000-", 1000, len(PAYLOAD) - 1), ("bytes=-100", len(PAYLOAD) - 100, len(PAYLOAD) - 1), ("bytes=5-99999999", 5, len(PAYLOAD) - 1)],
)
def test_single_range_gives_206(server: Server, site: Path, range_header: str, start: int, end: int) -> None:
    status, headers, body = fetch(server, "/blob.bin", headers={"Range": range_header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {start}-{end}/{len(PAYLOAD)}"
    assert body == PAYLOAD[start : end + 1]


@pytest.mark.parametrize("range_header", ["bytes=1048576-", "bytes=-0", "bytes=2000000-2000001"])
def test_unsatisfiable_range_gives_416(server: Server, site: Path, range_header: str) -> None:
    status, headers, _ = fetch(server, "/blob.bin", headers={"Range": range_header})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(PAYLOAD)}"


def test_range_on_an_empty_file_is_416(server: Server, site: Path) -> None:
    assert fetch(server, "/zero.txt", headers={"Range": "bytes=0-"})[0] == 416
    status, headers, body = fetch(server, "/zero.txt")
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=x-y"])
def test_multi_and_malformed_ranges_are_ignored(server: Server, site: Path, range_header: str) -> None:
    status, headers, body = fetch(server, "/blob.bin", headers={"Range": range_header})
    assert status == 200 and body == PAYLOAD


def test_if_range(server: Server, site: Path) -> None:
    headers = fetch(server, "/blob.bin")[1]
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert fetch(server, "/blob.bin", headers={"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    assert fetch(server, "/blob.bin", headers={"Range": "bytes=0-0", "If-Range": modified})[0] == 206
    status, _, body = fetch(server, "/blob.bin", headers={"Range": "bytes=0-0", "If-Range": '"old"'})
    assert status == 200 and body == PAYLOAD
    assert fetch(server, "/blob.bin", headers={"Range": "bytes=0-0", "If-Range": f"W/{etag}"})[0] == 200


def test_head_ignores_range(server: Server, site: Path) -> None:
    status, headers, _ = fetch(server, "/blob.bin", "HEAD", headers={"Range": "bytes=0-9"})
    assert status == 200 and headers["Content-Length"] == str(len(PAYLOAD))


def test_a_fifo_in_the_root_is_never_opened(server: Server, site: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(site / "pipe.txt")  # reading it would block the polling thread forever
    assert fetch(server, "/pipe.txt")[0] == 404


def test_the_root_can_be_given_to_the_server(site: Path) -> None:
    server = Server(root=site)
    server.start("127.0.0.1", 0)
    try:
        assert server.http_server.root == site
        assert fetch(server, "/docs/note.txt")[2] == b"a note\n"
    finally:
        server.stop()


curl = shutil.which("curl")


def run_curl(server: Server, *args: str) -> subprocess.CompletedProcess:
    argv = ["curl", "-sS", "--max-time", str(DEADLINE), *args]
    return run_client(server, lambda: subprocess.run(argv, capture_output=True, timeout=DEADLINE * 2))


@pytest.mark.skipif(curl is None, reason="curl is not installed")
def test_curl_resumes_a_download_and_revalidates(server: Server, site: Path, tmp_path: Path) -> None:
    url = server.http_server.get_url("blob.bin")
    partial = tmp_path / "partial.bin"
    partial.write_bytes(PAYLOAD[:300_000])
    result = run_curl(server, "-C", "-", "-o", str(partial), "-w", "%{http_code}", url)
    assert result.stdout == b"206", result.stderr
    assert partial.read_bytes() == PAYLOAD
    # -z sends If-Modified-Since from the file's time; the copy is newer, so 304.
    os.utime(partial, (time.time() + 60, time.time() + 60))
    result = run_curl(server, "-z", str(partial), "-o", os.devnull, "-w", "%{http_code}", url)
    assert result.stdout == b"304", result.stderr


DOWNLOADER = """
import sys, urllib.request
size, url = int(sys.argv[1]), sys.argv[2]
received, marker = 0, b""
with urllib.request.urlopen(url, timeout=30) as response:
    while chunk := response.read(1 << 20):
        if received <= size // 2 < received + len(chunk):
            marker = chunk[size // 2 - received :][:6]
        received += len(chunk)
print(received, marker.decode())
"""


def test_a_large_download_is_sliced_across_poll_steps(tmp_path: Path) -> None:
    """A fast reader of a 1 GiB file (in another process): every byte
    arrives, and the body is pulled a slice at a time across poll steps.
    With no budget at all (``poll_budget=0``), a step pulls one slice per
    turn the connection gets: from its resume timer and from its socket
    draining, so two at most."""
    size = 1 << 30
    with open(tmp_path / "big.bin", "wb") as file:
        file.truncate(size)  # sparse: no disk space, reads are zeros
        file.seek(size // 2)
        file.write(b"middle")
    server = Server(root=tmp_path, poll_budget=0.0)
    server.start("127.0.0.1", 0)
    url = server.http_server.get_url("big.bin")
    polls = count_polls(server)
    pulled_in_step: list[int] = []
    handle = server.http_server.handle

    def counted(request: Request) -> Response:
        response = handle(request)
        chunks = response.body

        def pulled() -> Iterator[bytes]:
            try:
                for chunk in chunks:  # type: ignore[union-attr]
                    pulled_in_step.append(len(polls))
                    yield chunk
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

        response.body = pulled()
        return response

    server.http_server.handle = counted  # type: ignore[method-assign]
    client = subprocess.Popen([sys.executable, "-c", DOWNLOADER, str(size), url], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while client.poll() is None:
            assert time.monotonic() < deadline, "download did not finish"
            server.poll(0.001)
        output = client.stdout.read() if client.stdout else ""
    finally:
        client.kill()
        client.wait()
        server.stop()
    assert client.returncode == 0
    assert output.split() == [str(size), "middle"]
    per_step = collections.Counter(pulled_in_step)
    assert max(per_step.values()) <= 2, per_step.most_common(3)
    assert len(per_step) > 100  # spread over many steps, never done in one
