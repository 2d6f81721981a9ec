"""request.form(), request.json(), request.cookies and redirect(): over
http.client and urllib against a real server, and the parsers fuzzed."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import run_client
from rawhttp import fetch
from wsserver import Server, redirect
from wsserver.http import HttpError, Request
from wsserver.http.forms import parse_cookies, parse_form

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def echo_form(server: Server) -> Server:
    @server.http_server.route("/form", methods=("POST",))
    def form(request: Request) -> dict[str, Any]:
        fields = request.form(max_fields=5)
        return {"last": dict(fields), "all": fields.items_all()}

    return server


def test_a_form_with_repeated_and_non_ascii_fields(echo_form: Server) -> None:
    body = urlencode([("name", "Zoë"), ("tag", "a"), ("tag", "b & c"), ("empty", "")]).encode()
    status, _, answer = fetch(echo_form, "/form", "POST", body, {"Content-Type": FORM + "; charset=UTF-8"})
    assert status == 200
    assert json.loads(answer) == {
        "last": {"name": "Zoë", "tag": "b & c", "empty": ""},
        "all": [["name", "Zoë"], ["tag", "a"], ["tag", "b & c"], ["empty", ""]],
    }


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b"a=1", "text/plain", 400, b"expected a form"),
        (b"a=1", None, 400, b"no Content-Type"),
        (b"a=%FF", FORM, 400, b"not UTF-8"),
        ("a=é".encode(), FORM, 400, b"only ASCII"),
        (b"&".join(b"f%d=1" % n for n in range(6)), FORM, 413, b"more than 5 form fields"),
    ],
)
def test_a_bad_form_gets_a_clear_status(echo_form: Server, body: bytes, content_type: str | None, status: int, message: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    got, _, answer = fetch(echo_form, "/form", "POST", body, headers)
    assert got == status and message in answer


def test_json_bodies(server: Server) -> None:
    server.http_server.route("/json", methods=("POST",), handler=lambda request: {"got": request.json()})
    status, _, answer = fetch(server, "/json", "POST", b'{"n": [1, 2.5, "\\u00e9"]}', {"Content-Type": "application/json"})
    assert (status, json.loads(answer)) == (200, {"got": {"n": [1, 2.5, "é"]}})
    status, _, _ = fetch(server, "/json", "POST", b'{"a": 1}', {"Content-Type": "application/merge-patch+json"})
    assert status == 200
    status, _, answer = fetch(server, "/json", "POST", b'{"a": ', {"Content-Type": "application/json"})
    assert status == 400 and b"not JSON" in answer
    status, _, answer = fetch(server, "/json", "POST", b'{"a": 1}', {"Content-Type": "text/plain"})
    assert status == 400 and b"expected JSON" in answer
    status, _, answer = fetch(server, "/json", "POST", b"[" * 100_000, {"Content-Type": "application/json"})
    assert status == 400 and b"nested too deeply" in answer


def test_cookies(server: Server) -> None:
    server.http_server.route("/c", handler=lambda request: request.cookies)
    status, _, answer = fetch(server, "/c", headers={"Cookie": 'session=abc; theme="dark"; session=older; junk; =x'})
    assert (status, json.loads(answer)) == (200, {"session": "abc", "theme": "dark"})
    assert json.loads(fetch(server, "/c")[2]) == {}


def test_a_redirect_is_followed_by_a_real_client(server: Server) -> None:
    server.http_server.route("/old", handler=lambda request: redirect("/new?from=old"))
    server.http_server.route("/new", handler=lambda request: f"landed, query {request.query}")
    url = server.http_server.get_url("/old")
    assert url is not None

    def browse() -> tuple[str, bytes]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.url, response.read()

    final_url, body = run_client(server, browse)
    assert final_url.endswith("/new?from=old") and body == b"landed, query {'from': 'old'}"
    status, headers, _ = fetch(server, "/old")
    assert status == 302 and headers["Location"] == "/new?from=old"


def test_redirect_refuses_what_would_break_the_answer() -> None:
    assert redirect("/x", 303).status == 303
    with pytest.raises(ValueError, match="status"):
        redirect("/x", 200)
    with pytest.raises(ValueError, match="CR, LF"):
        redirect("/x\r\nSet-Cookie: stolen=1")


# -- the parsers, fuzzed ---------------------------------------------------------

field_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.tuples(field_text, field_text), max_size=20))
def test_form_round_trip(fields: list[tuple[str, str]]) -> None:
    parsed = parse_form(urlencode(fields).encode(), FORM)
    assert parsed.items_all() == fields
    for name, _ in fields:
        assert parsed.get_all(name) == [v for k, v in fields if k == name]


@given(st.binary(max_size=200))
def test_any_form_body_is_parsed_or_refused_with_a_status(body: bytes) -> None:
    try:
        parse_form(body, FORM, max_fields=50)
    except HttpError as exc:
        assert exc.status in (400, 413)


@given(st.lists(st.text(max_size=60), max_size=4))
def test_any_cookie_header_parses(values: list[str]) -> None:
    cookies = parse_cookies(values)
    assert all(name and name == name.strip() for name in cookies)


# -- from a real browser -----------------------------------------------------------

FORM_PAGE = """<!doctype html><meta charset="utf-8">
<form id="f" method="post" action="/form">
  <input name="name" value="Zoë Ünal"><input name="tag" value="a"><input name="tag" value="b&amp;c">
  <textarea name="note">two
lines</textarea>
</form>"""

# The browser encodes the form itself (URLSearchParams of its FormData: the
# urlencoding a submit uses, without the submit's CRLF line endings), sets a
# cookie, and follows a redirect to a page that reads the cookie back.
BROWSE = """(async () => {
  const form = await (await fetch("/form", {method: "POST", body: new URLSearchParams(new FormData(document.getElementById("f")))})).json();
  document.cookie = "theme=dark; SameSite=Lax";
  const after = await fetch("/old");
  return {form, redirected: after.redirected, cookies: await after.json()};
})()"""


def test_chromium_posts_a_form_and_sends_cookies_through_a_redirect(tmp_path: Any) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    server = Server()
    server.start("127.0.0.1", 0)
    http = server.http_server
    http.route("/", handler=lambda request: FORM_PAGE)

    @http.route("/form", methods=("POST",))
    def form(request: Request) -> dict[str, Any]:
        fields = request.form()
        return {"name": fields["name"], "tags": fields.get_all("tag"), "note": fields["note"]}

    http.route("/old", handler=lambda request: redirect("/cookies", 303))
    http.route("/cookies", handler=lambda request: request.cookies)

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(http.get_url())
            return browser.evaluate(session, BROWSE)

    try:
        outcome = run_client(server, browse, timeout=120.0)
    finally:
        server.shutdown()
    assert outcome == {
        "form": {"name": "Zoë Ünal", "tags": ["a", "b&c"], "note": "two\nlines"},
        "redirected": True,
        "cookies": {"theme": "dark"},
    }
