"""Cookies a response sets and signed session cookies: their safe defaults,
forged, altered and expired sessions refused, the session read in
``on_upgrade_to_websocket`` to admit a page's WebSocket; over http.client,
the websockets client and headless Chromium."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import DEADLINE, run_client
from rawhttp import fetch
from wsserver import Client, Response, Server, UpgradeResponse
from wsserver.http import Cookie, Headers, Request, Sessions
from wsserver.http.framing import plan_response


def set_cookie_headers(response: Response, tls: bool = False) -> list[str]:
    head = plan_response(response, None, False, date="now", tls=tls).head.decode("latin-1")
    return [line.partition(": ")[2] for line in head.split("\r\n") if line.startswith("Set-Cookie: ")]


def test_cookie_defaults_are_the_safe_ones() -> None:
    response = Response("ok")
    response.set_cookie("theme", "dark")
    response.set_cookie("remember", "1", max_age=3600, secure=False, httponly=False, samesite="Strict", path="/app")
    assert set_cookie_headers(response) == ["theme=dark; Path=/; HttpOnly; SameSite=Lax", "remember=1; Max-Age=3600; Path=/app; SameSite=Strict"]
    # Under TLS, Secure comes by itself; secure=False keeps it off.
    assert set_cookie_headers(response, tls=True) == ["theme=dark; Path=/; Secure; HttpOnly; SameSite=Lax", "remember=1; Max-Age=3600; Path=/app; SameSite=Strict"]


def test_delete_cookie_and_samesite_none() -> None:
    response = Response("ok")
    response.delete_cookie("theme")
    response.set_cookie("embed", "1", samesite="None")
    assert set_cookie_headers(response) == [
        "theme=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax",
        "embed=1; Path=/; Secure; HttpOnly; SameSite=None",
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a b"}, "token"),
        ({"name": "a", "value": "x;y"}, "encode it"),
        ({"name": "a", "value": "Zoë"}, "encode it"),
        ({"name": "a", "value": 'say "hi"'}, "encode it"),
        ({"name": "a", "path": "/\r\nX: 1"}, "control character"),
        ({"name": "a", "domain": "x; Secure"}, "semicolon"),
        ({"name": "a", "samesite": "lax"}, "SameSite is one of"),
        ({"name": "a", "samesite": "None", "secure": False}, "needs Secure"),
    ],
)
def test_cookies_that_would_break_the_header_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cookie(**kwargs)


@pytest.fixture
def sessions(server: Server) -> Sessions:
    """``/login`` stores the user in the session, ``/me`` reads it, ``/logout`` clears it."""
    http = server.http_server
    http.sessions = Sessions(key=b"k" * 32, max_age=600)

    @http.route("/login", methods=("POST",))
    def login(request: Request) -> str:
        request.session["user"] = request.form()["user"]
        return "in"

    http.route("/me", handler=lambda request: dict(request.session))

    @http.route("/logout", methods=("POST",))
    def logout(request: Request) -> str:
        request.session.clear()
        return "out"

    return http.sessions


def login(server: Server, user: str = "zoë") -> str:
    """Log in; the session cookie's ``name=value``."""
    status, headers, body = fetch(server, "/login", "POST", urlencode({"user": user}).encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"in")
    [cookie] = headers.get_all("Set-Cookie")
    assert cookie.endswith("; Max-Age=600; Path=/; HttpOnly; SameSite=Lax")
    return cookie.partition(";")[0]


def me(server: Server, cookie: str) -> Any:
    status, headers, body = fetch(server, "/me", headers={"Cookie": cookie})
    assert status == 200 and headers.get("Set-Cookie") is None  # an unchanged session is not sent again
    return json.loads(body)


def test_a_session_round_trips(server: Server, sessions: Sessions) -> None:
    cookie = login(server)
    assert me(server, cookie) == {"user": "zoë"}
    assert me(server, "") == {}
    status, headers, _ = fetch(server, "/logout", "POST", b"", {"Cookie": cookie})
    assert status == 200 and headers["Set-Cookie"].startswith("wsserver_session=; Max-Age=0;")


def test_altered_forged_and_expired_sessions_are_empty(server: Server, sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    cookie = login(server)
    name, _, value = cookie.partition("=")
    payload, stamp, signature = value.split(".")
    other = Sessions(key=b"o" * 32).cookie(sessions.load(Request("GET", "/", "HTTP/1.1", Headers([("Cookie", cookie)]))))
    for forged in (
        f"{name}={payload}.{stamp}.{'A' * len(signature)}",  # a made-up signature
        f"{name}={payload[:-2]}AA.{stamp}.{signature}",  # altered values
        f"{name}={payload}.{int(stamp, 16) + 1:x}.{signature}",  # an altered date
        f"{name}={other.value}",  # signed with another key
        f"{name}={payload}",  # no signature at all
        f"{name}=.....",
    ):
        assert me(server, forged) == {}, forged
    later = time.time() + 601
    monkeypatch.setattr(time, "time", lambda: later)
    assert me(server, cookie) == {}


def test_a_session_too_big_for_a_cookie_is_a_500(server: Server, sessions: Sessions) -> None:
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)

    @server.http_server.route("/big")
    def big(request: Request) -> str:
        request.session["data"] = "x" * 5000
        return "never"

    status, _, _ = fetch(server, "/big")
    assert status == 500 and "keep an id in it" in str(errors[0])


def test_sessions_off_say_how_to_turn_them_on(server: Server) -> None:
    errors: list[BaseException] = []
    server.on_error = lambda client, exc: errors.append(exc)
    server.http_server.route("/me", handler=lambda request: dict(request.session))
    status, _, _ = fetch(server, "/me")
    assert status == 500 and "http_server.sessions" in str(errors[0])


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Sessions(key=b"short")


def admit_logged_in(server: Server) -> None:
    """WebSocket clients must come with a logged-in session; each is greeted by name."""

    def upgrade(client: Client, request: Request, response: UpgradeResponse, protocols: list[str], origin: str | None) -> None:
        if "user" not in request.session:
            response.error_status(403, "log in first")

    server.on_upgrade_to_websocket = upgrade
    server.on_open = lambda client: client.send(f"hello {client.request.session['user']}")


def test_on_upgrade_reads_the_session(server: Server, sessions: Sessions) -> None:
    admit_logged_in(server)
    cookie = login(server)
    url = server.get_url()

    def greeting(headers: dict[str, str]) -> Any:
        with connect(url, additional_headers=headers, open_timeout=DEADLINE) as ws:
            return ws.recv(timeout=DEADLINE)

    assert run_client(server, greeting, {"Cookie": cookie}) == "hello zoë"
    with pytest.raises(InvalidStatus) as refused:
        run_client(server, greeting, {})
    assert refused.value.response.status_code == 403


LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>login</title>"""

# The page logs in with a form POST, reads document.cookie (the session's
# cookie is HttpOnly: it must not appear), then opens a WebSocket, which
# carries the cookie by itself.
BROWSE = """(async () => {
  await fetch("/login", {method: "POST", body: new URLSearchParams({user: "Zoë"})});
  const visible = document.cookie;
  const greeting = await new Promise((resolve, reject) => {
    const ws = new WebSocket(location.href.replace("http", "ws"));
    ws.onmessage = (event) => { resolve(event.data); ws.close(); };
    ws.onerror = () => reject(new Error("the WebSocket was refused"));
  });
  return {visible, greeting};
})()"""


def test_chromium_logs_in_and_its_websocket_carries_the_session(server: Server, sessions: Sessions, tmp_path: Path) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    admit_logged_in(server)
    server.http_server.route("/", handler=lambda request: LOGIN_PAGE)

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(str(server.http_server.get_url()))
            outcome = browser.evaluate(session, BROWSE)
            cookies = browser.call("Network.getCookies", session)["cookies"]
            return outcome, [(c["name"], c["httpOnly"], c["sameSite"], c["secure"]) for c in cookies]

    outcome, cookies = run_client(server, browse, timeout=120.0)
    assert outcome == {"visible": "", "greeting": "hello Zoë"}
    assert cookies == [("wsserver_session", True, "Lax", False)]


def test_a_plain_client_without_the_cookie_is_refused(server: Server, sessions: Sessions) -> None:
    admit_logged_in(server)
    port = server.get_local_ip()[1]

    def upgrade() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        try:
            conn.request("GET", "/", headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
            return conn.getresponse().status
        finally:
            conn.close()

    assert run_client(server, upgrade) == 403
