"""Paths never leave the document root: hostile request targets sent raw
over a socket (http.client would normalise some of them), and symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_client
from rawhttp import exchange
from wsserver import Server

SECRET = b"TOPSECRET"

# (raw request target, the status it must get)
HOSTILE = [
    ("/../outside/secret.txt", 403),
    ("/../../../../../../etc/passwd", 403),
    ("/%2e%2e/outside/secret.txt", 403),
    ("/%2E%2E/%2E%2E/%2E%2E/etc/passwd", 403),
    ("/..%2foutside%2fsecret.txt", 403),
    ("/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 403),
    ("/docs/../../outside/secret.txt", 403),
    ("/./../outside/secret.txt", 403),
    ("/..\\outside\\secret.txt", 403),
    ("/%5c..%5coutside%5csecret.txt", 403),
    ("/docs/..%5c..%5coutside%5csecret.txt", 403),
    ("/index.html%00.png", 403),
    ("/C:/Windows/win.ini", 403),
    ("/c:%5cwindows%5cwin.ini", 403),
    ("http://127.0.0.1/../outside/secret.txt", 403),
    ("/out-link/secret.txt", 403),
    ("/secret-link", 403),
    ("//etc/passwd", 404),
    ("/%2fetc%2fpasswd", 404),
    ("/%252e%252e/outside/secret.txt", 404),  # decoded once only: a literal "%2e%2e" name
    ("/..;/outside/secret.txt", 404),
    ("/..../outside/secret.txt", 404),
    ("/.hidden", 404),
    ("/%c0%ae%c0%ae/outside/secret.txt", 400),  # overlong UTF-8 for "."
    ("/%ff%fe/etc/passwd", 400),
]


@pytest.fixture
def site(tmp_path: Path, server: Server) -> Path:
    root = tmp_path / "site"
    outside = tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "index.html").write_text("<p>home</p>")
    (root / ".hidden").write_bytes(SECRET)
    (root / "docs" / "note.txt").write_text("a note")
    os.symlink(outside, root / "out-link")
    os.symlink(outside / "secret.txt", root / "secret-link")
    os.symlink(root / "docs" / "note.txt", root / "inner-link.txt")
    server.http_server.root = root
    return root


def test_there_are_enough_hostile_paths() -> None:
    assert len(HOSTILE) >= 15


@pytest.mark.parametrize("target, status", HOSTILE)
def test_hostile_target_gets_an_error_and_never_the_file(server: Server, site: Path, target: str, status: int) -> None:
    port = server.get_local_ip()[1]
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1")
    (response,) = run_client(server, exchange, port, request)
    assert response.status == status, (target, response.status, response.body)
    assert SECRET not in response.body and b"root:" not in response.body


def test_a_raw_nul_byte_in_the_target_is_a_bad_request(server: Server, site: Path) -> None:
    port = server.get_local_ip()[1]
    (response,) = run_client(server, exchange, port, b"GET /index.html\x00/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 400 and b"root:" not in response.body


def test_a_symlink_inside_the_root_is_followed(server: Server, site: Path) -> None:
    port = server.get_local_ip()[1]
    (response,) = run_client(server, exchange, port, b"GET /inner-link.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (response.status, response.body) == (200, b"a note")


def test_a_symlinked_root_still_confines(tmp_path: Path, site: Path) -> None:
    link = tmp_path / "root-link"
    os.symlink(site, link)
    server = Server(root=link)
    server.start("127.0.0.1", 0)
    try:
        port = server.get_local_ip()[1]
        ok, hostile = run_client(server, exchange, port, b"GET /docs/note.txt HTTP/1.1\r\nHost: localhost\r\n\r\nGET /../outside/secret.txt HTTP/1.1\r\nHost: localhost\r\n\r\n", 2)
    finally:
        server.stop()
    assert ok.status == 200 and hostile.status == 403 and SECRET not in hostile.body


def test_the_fallback_and_error_pages_stay_inside_the_root(server: Server, site: Path) -> None:
    """An SPA fallback never turns a forbidden path into a page, and a
    custom error page outside the root is refused (the plain error is sent)."""
    server.http_server.fallback = "index.html"
    server.http_server.error_pages[403] = "../outside/secret.txt"
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)
    port = server.get_local_ip()[1]
    forbidden, spa = run_client(server, exchange, port, b"GET /../outside/x HTTP/1.1\r\nHost: localhost\r\n\r\nGET /app/route HTTP/1.1\r\nHost: localhost\r\n\r\n", 2)
    assert forbidden.status == 403 and SECRET not in forbidden.body
    assert errors, "the bad error page was reported"
    assert (spa.status, spa.body) == (200, b"<p>home</p>")
