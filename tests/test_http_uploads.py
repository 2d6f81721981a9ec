"""Streamed uploads (``route(stream=True)``): multipart bodies from curl and
headless Chromium received a slice at a time into temporary files or the
application's sinks, while WebSocket clients keep being served; hostile
bodies refused with their status, and nothing left on disk after any of
them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import DEADLINE, Worker, pump_until, run_client
from rawhttp import fetch
from test_http_expect import read_head, read_to_end
from wsserver import Server
from wsserver.http import Request
from wsserver.http.uploads import MAX_PART_HEADERS, MAX_PARTS, Part, delete_in_slices, safe_filename

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
BOUNDARY = "----wsserver-test-boundary"


def describe(request: Request) -> dict[str, Any]:
    """What a handler received: the text fields, and each file's name, size and digest."""
    files = []
    for name, upload in request.files.items_all():
        digest = hashlib.sha256()
        with upload.open() as file:
            while block := file.read(1024 * 1024):
                digest.update(block)
        files.append({"name": name, "filename": upload.filename, "type": upload.content_type, "size": upload.size, "sha256": digest.hexdigest()})
    return {"fields": request.form().items_all(), "files": files}


@pytest.fixture
def uploads(server: Server, tmp_path: Path) -> Path:
    """A server with a streamed ``/upload`` route that describes what it got; the directory its temporary files go to."""
    directory = tmp_path / "incoming"
    directory.mkdir()
    server.http_server.upload_dir = str(directory)
    server.http_server.route("/upload", methods=("POST",), handler=describe, stream=True)
    return directory


def multipart(*parts: tuple[str, bytes], boundary: str = BOUNDARY, end: bool = True) -> bytes:
    """A multipart/form-data body of ``(head lines, data)`` parts."""
    body = b"".join(b"--%s\r\n%s\r\n\r\n%s\r\n" % (boundary.encode(), head.encode("utf-8"), data) for head, data in parts)
    return body + (b"--%s--\r\n" % boundary.encode() if end else b"")


def field(name: str, value: bytes) -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"', value


def file_part(name: str, filename: str, data: bytes) -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: application/octet-stream', data


def post(server: Server, body: bytes, content_type: str = f"multipart/form-data; boundary={BOUNDARY}", path: str = "/upload") -> tuple[int, bytes]:
    status, _, answer = fetch(server, path, "POST", body, {"Content-Type": content_type})
    return status, answer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_curl
def test_curl_uploads_files_and_fields(server: Server, uploads: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.bin"
    first.write_bytes(os.urandom(1024 * 1024))
    second = tmp_path / "second.txt"
    second.write_bytes(b"two\r\n--" + BOUNDARY.encode() + b"\r\nnot a boundary: the real one is random\n")
    argv = [str(CURL), "-sS", "--max-time", str(DEADLINE), "-F", "title=Zoë's files", "-F", f"doc=@{first}", "-F", f"doc=@{second};type=text/plain", "-F", "tag=a", "-F", "tag=b"]
    result = run_client(server, lambda: subprocess.run([*argv, str(server.http_server.get_url("upload"))], capture_output=True, timeout=DEADLINE * 2))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "fields": [["title", "Zoë's files"], ["tag", "a"], ["tag", "b"]],
        "files": [
            {"name": "doc", "filename": "first.bin", "type": "application/octet-stream", "size": 1024 * 1024, "sha256": sha256(first.read_bytes())},
            {"name": "doc", "filename": "second.txt", "type": "text/plain", "size": second.stat().st_size, "sha256": sha256(second.read_bytes())},
        ],
    }
    assert list(uploads.iterdir()) == []


class DigestSink:
    """An application's sink: it hashes a file as it arrives and records,
    at each write, how many WebSocket echoes the server had sent by then."""

    def __init__(self, echoes: list[int]) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.echoes_at_write: list[int] = []
        self._echoes = echoes
        self.closed = self.discarded = False

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.echoes_at_write.append(len(self._echoes))

    def close(self) -> None:
        self.closed = True

    def discard(self) -> None:
        self.discarded = True


def echo_until(url: str, stop: threading.Event) -> list[int]:
    """Numbered echo round trips until ``stop``; the numbers that came back."""
    from websockets.sync.client import connect

    received = []
    with connect(url, open_timeout=DEADLINE) as ws:
        n = 0
        while not stop.is_set():
            ws.send(str(n))
            received.append(int(ws.recv(timeout=DEADLINE)))
            n += 1
    return received


@needs_curl
def test_a_200_mib_upload_leaves_websocket_clients_served(server: Server, tmp_path: Path) -> None:
    """While curl uploads 200 MiB into an application sink, a WebSocket
    client's echoes go on: they keep arriving between the sink's writes,
    every one in order."""
    echoes: list[int] = []

    def echo(client: Any, message: Any) -> None:
        echoes.append(int(message.data))
        client.send(message.data)

    server.on_message = echo
    sinks: list[DigestSink] = []

    def open_sink(request: Request, part: Part) -> DigestSink:
        sinks.append(DigestSink(echoes))
        return sinks[-1]

    server.http_server.route("/sink", methods=("POST",), handler=lambda request: {"sizes": [f.size for f in request.files.get_all("big")]}, stream=open_sink)
    block = os.urandom(1024 * 1024)
    big = tmp_path / "big.bin"
    with big.open("wb") as file:
        for _ in range(200):
            file.write(block)
    expected = hashlib.sha256()
    for _ in range(200):
        expected.update(block)

    stop = threading.Event()
    echo_client = Worker(echo_until, server.get_url(), stop)
    echo_client.start()
    pump_until(server, lambda: len(echoes) >= 3, what="the first echoes")
    argv = [str(CURL), "-sS", "--max-time", "120", "-F", f"big=@{big}", str(server.http_server.get_url("sink"))]
    try:
        result = run_client(server, lambda: subprocess.run(argv, capture_output=True, timeout=150), timeout=150)
    finally:
        stop.set()
        pump_until(server, lambda: not echo_client.is_alive(), what="the echo client's end")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sizes": [200 * 1024 * 1024]}
    [sink] = sinks
    assert sink.closed and not sink.discarded
    assert sink.digest.hexdigest() == expected.hexdigest()
    # Echoes went on between the first write of the file and the last:
    # the upload never held the GUI thread for long.
    assert sink.echoes_at_write[-1] - sink.echoes_at_write[0] >= 10, sink.echoes_at_write[:: len(sink.echoes_at_write) // 20]
    received = echo_client.outcome()
    assert received == list(range(len(received))) == echoes


def test_file_names_keep_their_base_name_only(server: Server, uploads: Path) -> None:
    body = multipart(
        file_part("a", "../../x", b"1"),
        file_part("b", "C:\\Users\\me\\y.txt", b"2"),
        file_part("c", "..", b"3"),
        file_part("d", "photo été.jpg", b"4"),
    )
    status, answer = post(server, body)
    assert status == 200, answer
    assert [(f["name"], f["filename"]) for f in json.loads(answer)["files"]] == [("a", "x"), ("b", "y.txt"), ("c", ""), ("d", "photo été.jpg")]
    assert list(uploads.iterdir()) == []


@pytest.mark.parametrize(
    "name, expected",
    [("../../x", "x"), ("C:\\x", "x"), ("C:", ""), ("/etc/passwd", "passwd"), ("..", ""), (".", ""), ("a\x00b\nc", "abc"), ("dir/", ""), ("ok.txt", "ok.txt")],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (multipart(field("a", b"1")), "multipart/form-data", 400, b"without a valid boundary"),
        (multipart(field("a", b"1")), "multipart/form-data; boundary=" + "b" * 71, 400, b"without a valid boundary"),
        (multipart(field("a", b"1")), "multipart/form-data; boundary=other", 400, b"malformed multipart body"),
        (b"preamble only, no boundary at all", f"multipart/form-data; boundary={BOUNDARY}", 400, b"malformed multipart body"),
        (multipart(field("a", b"1"), end=False), f"multipart/form-data; boundary={BOUNDARY}", 400, b"ends before its closing boundary"),
        (multipart(file_part("f", "x", b"12345"))[:-40], f"multipart/form-data; boundary={BOUNDARY}", 400, b"ends before its closing boundary"),
        (multipart(("Content-Type: text/plain", b"1")), f"multipart/form-data; boundary={BOUNDARY}", 400, b"without Content-Disposition"),
        (multipart(("Content-Disposition: attachment; name=a", b"1")), f"multipart/form-data; boundary={BOUNDARY}", 400, b"without Content-Disposition"),
        (multipart(field("a", b"\xff")), f"multipart/form-data; boundary={BOUNDARY}", 400, b"not UTF-8"),
        (
            multipart(('Content-Disposition: form-data; name="a"' + "\r\nX-Junk: 1" * MAX_PART_HEADERS, b"1")),
            f"multipart/form-data; boundary={BOUNDARY}",
            413,
            b"headers in a part",
        ),
        (multipart(("Content-Disposition: form-data; name=a\r\nX-Long: " + "x" * 20000, b"1")), f"multipart/form-data; boundary={BOUNDARY}", 413, b"part's headers are over"),
        (multipart(*[field("f", b"") for _ in range(MAX_PARTS + 1)]), f"multipart/form-data; boundary={BOUNDARY}", 413, b"parts in the multipart body"),
        (multipart(field("big", b"x" * (1024 * 1024 + 1))), f"multipart/form-data; boundary={BOUNDARY}", 413, b"form field 'big' is over"),
    ],
)
def test_a_hostile_multipart_body_gets_its_status_and_leaves_nothing(
    server: Server, uploads: Path, body: bytes, content_type: str, status: int, message: bytes
) -> None:
    # A file part first, so a temporary file exists when the body is refused.
    if content_type.endswith(BOUNDARY) and body.startswith(b"--" + BOUNDARY.encode()):
        body = multipart(file_part("early", "early.bin", b"e" * 100_000)).removesuffix(b"--%s--\r\n" % BOUNDARY.encode()) + body
    got, answer = post(server, body, content_type)
    assert (got, message in answer) == (status, True), answer
    assert list(uploads.iterdir()) == []


def test_a_body_that_is_not_multipart_goes_to_one_file(server: Server, uploads: Path) -> None:
    seen = {}

    def keep(request: Request) -> str:
        assert request.body_file is not None and request.body == b""
        seen["size"] = request.body_file.size
        seen["path"] = request.body_file.save(uploads.parent / "kept.bin")
        return "kept"

    server.http_server.route("/raw", methods=("PUT",), handler=keep, stream=True)
    data = os.urandom(300_000)
    status, _, answer = fetch(server, "/raw", "PUT", data, {"Content-Type": "application/octet-stream"})
    assert (status, answer) == (200, b"kept")
    assert seen["size"] == len(data) and Path(seen["path"]).read_bytes() == data
    assert list(uploads.iterdir()) == []


def chunked(body: bytes, size: int = 7000) -> bytes:
    """``body`` in the chunked transfer coding, ``size`` bytes a chunk."""
    chunks = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(chunks) + b"0\r\n\r\n"


def post_chunked(server: Server, body: bytes, path: str = "/upload") -> bytes:
    """The whole answer to ``body`` posted in chunks on a connection that then closes."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

    def talk(sock: socket.socket) -> bytes:
        sock.sendall(head.encode() + chunked(body))
        return read_to_end(sock)

    return run_client(server, lambda: _talk(server, talk))  # type: ignore[no-any-return]


def test_a_chunked_upload(server: Server, uploads: Path) -> None:
    answer = post_chunked(server, multipart(field("a", b"1"), file_part("f", "f.bin", b"z" * 200_000)))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["files"][0]["size"] == 200_000


def test_the_route_limit_gives_413(server: Server, uploads: Path) -> None:
    server.http_server.route("/small", methods=("POST",), handler=describe, stream=True, max_body_size=1000)
    status, answer = post(server, multipart(file_part("f", "f", b"x" * 2000)), path="/small")
    assert status == 413 and b"over 1000 bytes" in answer
    answer = post_chunked(server, multipart(file_part("f", "f", b"x" * 2000)), path="/small")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"over 1000 bytes" in answer
    assert list(uploads.iterdir()) == []


def test_the_route_limit_answers_an_expectation_at_once(server: Server, uploads: Path) -> None:
    server.http_server.route("/small", methods=("POST",), handler=describe, stream=True, max_body_size=1000)

    def talk(sock: socket.socket) -> tuple[bytes, bytes]:
        sock.sendall(b"POST /small HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n")
        return read_head(sock), read_to_end(sock)

    head, rest = run_client(server, lambda: _talk(server, talk))
    assert head.startswith(b"HTTP/1.1 413 ") and b"over 1000 bytes" in rest


def test_an_expectation_is_met_before_a_streamed_body(server: Server, uploads: Path) -> None:
    body = multipart(field("a", b"1"))

    def talk(sock: socket.socket) -> tuple[bytes, bytes]:
        head = f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        interim = read_head(sock)
        sock.sendall(body)
        return interim, read_to_end(sock)

    interim, answer = run_client(server, lambda: _talk(server, talk))
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"fields":[["a","1"]]' in answer


def test_an_expectation_it_cannot_meet_gets_417_and_leaves_nothing(server: Server, uploads: Path) -> None:
    def talk(sock: socket.socket) -> bytes:
        sock.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: telepathy\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 5000\r\n\r\n".encode())
        return read_to_end(sock)

    answer = run_client(server, lambda: _talk(server, talk))
    assert answer.startswith(b"HTTP/1.1 417 ")
    assert list(uploads.iterdir()) == []


def test_a_request_without_a_body_reaches_a_streamed_route(server: Server, uploads: Path) -> None:
    server.http_server.route("/either", methods=("GET", "POST"), handler=lambda request: {"files": len(request.files), "body_file": request.body_file is not None}, stream=True)
    status, _, answer = fetch(server, "/either")
    assert (status, json.loads(answer)) == (200, {"files": 0, "body_file": False})


def _talk(server: Server, talk: Any) -> Any:
    with socket.create_connection(server.get_local_ip(), timeout=DEADLINE) as sock:
        return talk(sock)


def partial_upload(server: Server, size: int = 1_000_000, sent: int = 400_000) -> socket.socket:
    """A connection that has sent the head and the first ``sent`` bytes of a ``size``-byte upload."""
    body = multipart(file_part("f", "f.bin", b"p" * size))
    sock = socket.create_connection(server.get_local_ip(), timeout=DEADLINE)
    head = f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:sent])
    return sock


def test_a_client_that_vanishes_mid_upload_leaves_nothing(server: Server, uploads: Path) -> None:
    sock = partial_upload(server)
    pump_until(server, lambda: any(uploads.iterdir()), what="the temporary file")
    pump_until(server, lambda: os.path.getsize(next(uploads.iterdir())) > 300_000, what="the sent bytes written")
    sock.close()
    pump_until(server, lambda: not any(uploads.iterdir()), what="the temporary file's removal")
    pump_until(server, lambda: server.connection_count() == 0, what="the connection's end")


def test_a_vanished_client_discards_the_applications_sink(server: Server) -> None:
    sinks: list[DigestSink] = []
    server.http_server.route("/upload", methods=("POST",), handler=describe, stream=lambda request, part: sinks.append(DigestSink([])) or sinks[-1])
    sock = partial_upload(server)
    pump_until(server, lambda: bool(sinks) and sinks[0].size > 300_000, what="the sent bytes written")
    sock.close()
    pump_until(server, lambda: sinks[0].discarded, what="the sink's discard")
    assert sinks[0].closed


def test_a_stalled_upload_times_out_with_408(server: Server, uploads: Path) -> None:
    server.handshake_timeout = 0.5
    sock = partial_upload(server)
    sock.settimeout(DEADLINE)
    answer = run_client(server, lambda: read_to_end(sock))
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert list(uploads.iterdir()) == []


def test_a_handler_that_raises_gets_500_and_leaves_nothing(server: Server, uploads: Path) -> None:
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)

    def fail(request: Request) -> None:
        raise RuntimeError("handler failed")

    server.http_server.route("/fail", methods=("POST",), handler=fail, stream=True)
    status, _ = post(server, multipart(file_part("f", "f.bin", b"x" * 100_000)), path="/fail")
    assert status == 500 and [str(e) for e in errors] == ["handler failed"]
    assert list(uploads.iterdir()) == []


def test_a_sink_that_fails_gets_500(server: Server) -> None:
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)

    class FullDisk(DigestSink):
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    server.http_server.route("/upload", methods=("POST",), handler=describe, stream=lambda request, part: FullDisk([]))
    status, answer = post(server, multipart(file_part("f", "f.bin", b"x" * 1000)))
    assert status == 500 and b"could not be stored" in answer
    assert [type(e) for e in errors] == [OSError]


def test_pipelined_requests_after_an_upload_are_answered(server: Server, uploads: Path) -> None:
    body = multipart(field("a", b"1"), file_part("f", "f.bin", b"q" * 150_000))
    head = f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    server.http_server.route("/next", handler=lambda request: "next")

    def talk(sock: socket.socket) -> bytes:
        sock.sendall(head.encode() + body + b"GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read_to_end(sock)

    answer = run_client(server, lambda: _talk(server, talk))
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.endswith(b"next")


def test_streamed_routes_need_python_multipart(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "python_multipart", None)
    with pytest.raises(ImportError, match=r"pip install wsserver\[multipart\]"):
        server.http_server.route("/upload", methods=("POST",), handler=describe, stream=True)


UPLOAD_PAGE = """<!doctype html><meta charset="utf-8"><title>upload</title>
<form id="f"><input name="title" value="Holiday"><input type="file" name="photo" multiple></form>"""

# The browser builds the multipart body itself from the form (FormData), as a submit would.
SUBMIT = """(async () => {
  const answer = await fetch("/upload", {method: "POST", body: new FormData(document.getElementById("f"))});
  return {status: answer.status, body: await answer.json()};
})()"""


def test_chromium_uploads_the_files_of_a_file_input(server: Server, uploads: Path, tmp_path: Path) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server.http_server.route("/", handler=lambda request: UPLOAD_PAGE)
    photo = tmp_path / "photo été.jpg"
    photo.write_bytes(os.urandom(3 * 1024 * 1024))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"line one\nline two\n")

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(str(server.http_server.get_url()))
            root = browser.call("DOM.getDocument", session)["root"]["nodeId"]
            node = browser.call("DOM.querySelector", session, nodeId=root, selector="input[type=file]")["nodeId"]
            browser.call("DOM.setFileInputFiles", session, files=[str(photo), str(notes)], nodeId=node)
            return browser.evaluate(session, SUBMIT)

    outcome = run_client(server, browse, timeout=120.0)
    assert outcome == {
        "status": 200,
        "body": {
            "fields": [["title", "Holiday"]],
            "files": [
                {"name": "photo", "filename": "photo été.jpg", "type": "image/jpeg", "size": photo.stat().st_size, "sha256": sha256(photo.read_bytes())},
                {"name": "photo", "filename": "notes.txt", "type": "text/plain", "size": notes.stat().st_size, "sha256": sha256(notes.read_bytes())},
            ],
        },
    }
    assert list(uploads.iterdir()) == []


@pytest.mark.parametrize(
    ("each_cut_takes", "sizes_in_mib"),
    [
        (0.0001, [32, 16]),  # fast cuts double: 8, then 16; the last 16 MiB go with the unlink
        (0.002, [32, 28, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),  # slow ones halve, down to 1 MiB
    ],
)
def test_a_big_temporary_file_is_deleted_a_cut_per_step(tmp_path: Path, each_cut_takes: float, sizes_in_mib: list[int]) -> None:
    path = tmp_path / "big.tmp"
    with path.open("wb") as file:
        file.truncate(40 * 1024 * 1024)  # sparse: the sizes are what matter here
    ticks = iter(n * each_cut_takes for n in range(1000))
    sizes = [path.stat().st_size // (1024 * 1024) for _ in delete_in_slices(path, clock=lambda: next(ticks))]
    assert sizes == sizes_in_mib and not path.exists()
    assert list(delete_in_slices(path)) == []  # already gone (saved elsewhere, say): nothing to do
