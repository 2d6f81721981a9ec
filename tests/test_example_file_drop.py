"""examples/file_drop.py, run as a user would: its page rendered with
Jinja2 and with string.Template, a name kept in the session, files
uploaded into its folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import pytest

from conftest import load_program
from rawhttp import fetch
from test_http_uploads import multipart
from wsserver import Server


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_program("examples/file_drop.py")


@pytest.fixture(params=["jinja2", "string.Template"])
def drop(request: pytest.FixtureRequest, example: ModuleType, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    if request.param == "jinja2":
        pytest.importorskip("jinja2")
    folder = tmp_path / "dropped"
    folder.mkdir()
    server = example.make_server(folder, use_jinja=request.param == "jinja2")
    server.start("127.0.0.1", 0)
    yield server, folder
    server.shutdown()


def test_the_file_drop_round_trip(drop: tuple[Server, Path]) -> None:
    server, folder = drop
    status, _, page = fetch(server, "/")
    assert status == 200 and b"Hello, stranger." in page
    status, headers, _ = fetch(server, "/name", "POST", urlencode({"name": "<b>Zoë</b>"}).encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, headers["Location"]) == (303, "/")
    cookie = headers["Set-Cookie"].partition(";")[0]
    _, _, page = fetch(server, "/", headers={"Cookie": cookie})
    assert "Hello, &lt;b&gt;Zoë&lt;/b&gt;.".encode() in page

    boundary = "drop"
    body = multipart(
        ('Content-Disposition: form-data; name="file"; filename="../../escape.txt"', b"one"),
        ('Content-Disposition: form-data; name="file"; filename="photo.jpg"', b"\xff\xd8 two"),
        boundary=boundary,
    )
    status, _, _ = fetch(server, "/upload", "POST", body, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie})
    assert status == 303
    assert sorted(p.name for p in folder.iterdir()) == ["escape.txt", "photo.jpg"]
    assert (folder / "photo.jpg").read_bytes() == b"\xff\xd8 two"
    assert not (folder.parent.parent / "escape.txt").exists()
    _, _, page = fetch(server, "/", headers={"Cookie": cookie})
    assert b"<li>escape.txt</li><li>photo.jpg</li>" in page
