"""Pairing a device with a one-time link (wsserver.http.pairing) and its QR
code (wsserver.lan): a token works once, never from another site nor after
it expired; the cookie it gives is HttpOnly and SameSite; a revoked device
is let in no more; the QR code, read back by a real QR reader, is the link."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import pump_until, run_client, ws_url
from qrread import read_qr
from rawhttp import fetch
from wsserver import Client, Server, UpgradeResponse
from wsserver.http import Request
from wsserver.http.headers import Headers
from wsserver.http.pairing import PairedDevice, Pairing
from wsserver.http.policy import host_allowed, origin_allowed
from wsserver.http.sessions import Session
from wsserver.lan import lan_addresses, qr_matrix, qr_text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pairing(server: Server, clock: Clock) -> Iterator[Pairing]:
    paired: list[PairedDevice] = []
    pairing = Pairing(server.http_server, ttl=300, on_paired=paired.append, clock=clock)

    @server.http_server.route("/")
    def page(request: Request) -> dict[str, Any]:
        device = pairing.device(request)
        return {"device": None if device is None else device.id}

    def admit(client: Client, request: Request, response: UpgradeResponse, *_: Any) -> None:
        if pairing.device(request) is None:
            response.error_status(403, "pair this device first")

    server.on_upgrade_to_websocket = admit
    pairing.paired = paired  # type: ignore[attr-defined]
    yield pairing


def path_of(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def pair(server: Server, link: str, **headers: str) -> tuple[int, Any]:
    status, answer, _ = fetch(server, path_of(link), headers=headers)
    return status, answer


def test_a_link_pairs_once_and_gives_a_safe_cookie(server: Server, pairing: Pairing) -> None:
    link = pairing.new_link(str(server.http_server.get_url()))
    assert link.startswith(str(server.http_server.get_url()) + "pair/")
    status, answer = pair(server, link, **{"User-Agent": "Phone/1.0", "Sec-Fetch-Site": "none"})
    assert (status, answer["Location"]) == (303, "/")
    cookie = answer["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes and "samesite=lax" in cookie.lower()
    (device,) = pairing.devices
    assert (device.name, device.address, pairing.paired) == ("Phone/1.0", "127.0.0.1", [device])  # type: ignore[attr-defined]
    session = cookie.partition(";")[0]
    assert json.loads(fetch(server, "/", headers={"Cookie": session})[2]) == {"device": device.id}
    assert json.loads(fetch(server, "/")[2]) == {"device": None}
    # The second use of the same link is refused, and pairs nothing.
    assert pair(server, link)[0] == 403 and len(pairing.devices) == 1


def test_an_expired_link_is_refused(server: Server, pairing: Pairing, clock: Clock) -> None:
    link = pairing.new_link(str(server.http_server.get_url()))
    clock.now += 300
    assert pair(server, link)[0] == 403 and pairing.devices == []
    clock.now += 1
    assert pair(server, pairing.new_link(str(server.http_server.get_url())))[0] == 303


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}, {"Origin": "null"}],
)
def test_a_link_from_another_site_is_refused_and_not_spent(server: Server, pairing: Pairing, headers: dict[str, str]) -> None:
    link = pairing.new_link(str(server.http_server.get_url()))
    assert pair(server, link, **headers)[0] == 403 and pairing.devices == []
    assert pair(server, link, **{"Sec-Fetch-Site": "none"})[0] == 303


def test_only_paired_devices_get_a_websocket_until_revoked(server: Server, pairing: Pairing) -> None:
    _, answer = pair(server, pairing.new_link(str(server.http_server.get_url())))
    session = answer["Set-Cookie"].partition(";")[0]

    def upgrade(headers: dict[str, str]) -> int:
        try:
            with connect(ws_url(server), additional_headers=headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run_client(server, upgrade, {"Cookie": session}) == 101
    assert run_client(server, upgrade, {}) == 403
    assert pairing.revoke(pairing.devices[0].id) and not pairing.revoke("device-unknown")
    assert run_client(server, upgrade, {"Cookie": session}) == 403


def test_allows_trusts_this_machine_and_paired_devices(server: Server, pairing: Pairing) -> None:
    request = Request("GET", "/", "HTTP/1.1", Headers([("Host", "192.0.2.2:8765")]))
    request.session = Session()
    assert pairing.allows(request, ("127.0.0.1", 5000)) and pairing.allows(request, ("::1", 5000, 0, 0))
    assert not pairing.allows(request, ("192.0.2.7", 5000))


def test_the_lan_address_needs_no_configuration() -> None:
    # Served on all interfaces, a page at the LAN address is its own origin, and an IP address is always an allowed host.
    assert host_allowed("192.168.1.20:8765", "0.0.0.0", None)
    assert origin_allowed("http://192.168.1.20:8765", "192.168.1.20:8765", "http", None)
    assert not origin_allowed("http://evil.example", "192.168.1.20:8765", "http", None)


def test_the_qr_code_reads_back_as_the_link(server: Server, pairing: Pairing) -> None:
    link = pairing.new_link("http://192.168.1.20:8765/")
    matrix = qr_matrix(link)
    assert read_qr(matrix) == [link]
    # The terminal drawing has the same modules, two rows to a line.
    lines = qr_text(link).splitlines()
    assert len(lines) == (len(matrix) + 1) // 2 and all(len(line) == len(matrix) for line in lines)


def test_lan_addresses_are_reachable_ones() -> None:
    import ipaddress

    for text in lan_addresses():
        address = ipaddress.ip_address(text)
        assert not (address.is_loopback or address.is_link_local or address.is_unspecified)


def test_chromium_pairs_by_link_and_lands_on_a_clean_url(server: Server, pairing: Pairing, tmp_path: Path) -> None:
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        pytest.skip("chromium is not installed (bash .ci/run installs the Debian package)")
    opened: list[Client] = []
    server.on_open = opened.append
    link = pairing.new_link(str(server.http_server.get_url()))
    check = """(async () => {
      const greeting = await new Promise((resolve, reject) => {
        const ws = new WebSocket(location.href.replace("http", "ws"));
        ws.onopen = () => { resolve("open"); ws.close(); };
        ws.onerror = () => reject(new Error("refused"));
      });
      return {href: location.href, body: document.body.innerText, cookie: document.cookie, greeting};
    })()"""

    def browse() -> Any:
        with Chromium(tmp_path / "profile", 60.0) as browser:
            session = browser.open(link)
            outcome = browser.evaluate(session, check)
            cookies = browser.call("Network.getCookies", session)["cookies"]
            second = browser.open(link)  # the same link again: spent
            return outcome, [(c["httpOnly"], c["sameSite"]) for c in cookies], browser.evaluate(second, "document.body.innerText")

    outcome, cookies, second = run_client(server, browse, timeout=120.0)
    (device,) = pairing.devices
    assert outcome == {"href": str(server.http_server.get_url()), "body": json.dumps({"device": device.id}, separators=(",", ":")), "cookie": "", "greeting": "open"}
    assert cookies == [(True, "Lax")] and "used already or has expired" in second
    pump_until(server, lambda: opened)


def test_the_guard_keeps_pages_files_and_uploads_from_devices_not_paired(server: Server, pairing: Pairing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsserver.http import pairing as pairing_module

    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.txt").write_text("private")
    (site / "pair").mkdir()
    (site / "pair" / "deep").mkdir()
    (site / "pair" / "deep" / "secret.txt").write_text("private")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    http = server.http_server
    http.root, http.upload_dir, http.guard = site, str(uploads), pairing.guard
    stored: list[str] = []
    http.route("/upload", methods=("POST",), stream=True, handler=lambda request: stored.append("ran") or "stored")
    # Tests connect from loopback, which is this machine: make it a stranger's address.
    monkeypatch.setattr(pairing_module, "_loopback", lambda host: False)
    assert [fetch(server, path)[0] for path in ("/", "/notes.txt", "/missing", "/pair/deep/secret.txt", "/pair/")] == [403] * 5
    status, _, _ = fetch(server, "/upload", "POST", b"x" * 300_000, {"Content-Type": "application/octet-stream"})
    assert status == 403 and stored == [] and list(uploads.iterdir()) == []
    # The link itself gets through, and the cookie it gives opens the rest.
    status, answer, _ = fetch(server, path_of(pairing.new_link(str(http.get_url()))))
    cookie = {"Cookie": answer["Set-Cookie"].partition(";")[0]}
    assert status == 303
    assert fetch(server, "/notes.txt", headers=cookie)[2] == b"private"
    assert fetch(server, "/upload", "POST", b"x" * 300_000, {**cookie, "Content-Type": "application/octet-stream"})[0] == 200
    assert stored == ["ran"]
