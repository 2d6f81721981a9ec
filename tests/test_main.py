"""``python -m wsserver``: the demo server out of the box, in a subprocess."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from conftest import DEADLINE
from qrread import read_qr


def start(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the server printed its URL
    if not line.startswith(("WebSocket: ws://", "WebSocket: wss://")):
        process.kill()
        pytest.fail(f"unexpected first line {line!r}: {process.stderr.read() if process.stderr else ''}")
    return process, line.split()[-1]


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(DEADLINE)


def test_echo_by_default() -> None:
    process, url = start()
    try:
        assert url.startswith("ws://127.0.0.1:")
        with connect(url) as ws:
            ws.send("ping me")
            assert ws.recv(timeout=DEADLINE) == "ping me"
            ws.send(b"\x00bin")
            assert ws.recv(timeout=DEADLINE) == b"\x00bin"
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize(("args", "negotiated"), [((), True), (("--no-compression",), False)])
def test_compression_is_negotiated_unless_turned_off(args: tuple[str, ...], negotiated: bool) -> None:
    process, url = start(*args)
    try:
        with connect(url) as ws:
            assert bool(ws.protocol.extensions) is negotiated
            ws.send("x" * 1000)
            assert ws.recv(timeout=DEADLINE) == "x" * 1000
    finally:
        assert stop(process) == 0


def test_tls_with_a_certificate_file(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    pem = tmp_path / "server.pem"  # key and chain in one file
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    process, url = start("--certfile", str(pem))
    try:
        assert url.startswith("wss://127.0.0.1:")
        with connect(url, ssl=trusting) as ws:
            ws.send("over TLS")
            assert ws.recv(timeout=DEADLINE) == "over TLS"
    finally:
        assert stop(process) == 0
    missing = subprocess.run([sys.executable, "-m", "wsserver", "--certfile", str(tmp_path / "nope.pem")], capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot load the certificate" in missing.stderr


def test_broadcast_relays_to_every_client() -> None:
    process, url = start("--broadcast", "-v")
    try:
        with connect(url) as alice, connect(url) as bob:
            alice.send("hello all")
            assert alice.recv(timeout=DEADLINE) == "hello all"
            assert bob.recv(timeout=DEADLINE) == "hello all"
    finally:
        assert stop(process) == 0
    assert process.stderr is not None
    assert "connected" in process.stderr.read()  # -v logs connections


def test_port_in_use_is_a_clear_error() -> None:
    process, url = start()
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        result = subprocess.run(
            [sys.executable, "-m", "wsserver", "--port", port], capture_output=True, text=True, timeout=DEADLINE
        )
        assert result.returncode == 1
        assert "cannot listen" in result.stderr
    finally:
        stop(process)


def test_safe_by_default_and_opened_up_by_name() -> None:
    """Foreign origins and host names are refused as shipped; --allow-origin
    and --allow-host open them up."""
    import http.client

    from websockets.exceptions import InvalidStatus

    def status_for_host(url: str, host: str) -> int:
        connection = http.client.HTTPConnection(url.split("/")[2], timeout=DEADLINE)
        connection.request("GET", "/", headers={"Host": host})
        return connection.getresponse().status

    def upgrade_from(url: str, origin: str) -> str:
        try:
            with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                ws.send("hi")
                return str(ws.recv(timeout=DEADLINE))
        except InvalidStatus as exc:
            return str(exc.response.status_code)

    process, url = start()
    try:
        assert status_for_host(url, "attacker.example") == 421
        assert upgrade_from(url, "http://attacker.example") == "403"
    finally:
        assert stop(process) == 0
    process, url = start("--allow-host", "mypc.lan", "--allow-origin", "http://app.example")
    try:
        assert status_for_host(url, "mypc.lan") == 200
        assert status_for_host(url, "attacker.example") == 421
        assert upgrade_from(url, "http://app.example") == "hi"
    finally:
        assert stop(process) == 0


def read_pairing(process: subprocess.Popen) -> tuple[str, list[str]]:
    """The pairing link the server printed, and the QR code's lines under it."""
    assert process.stdout is not None
    for line in iter(process.stdout.readline, ""):
        if line.startswith("Pair a device"):
            link = line.split()[-1]
            qr = [process.stdout.readline().rstrip("\n")]
            while len(qr) < len(qr[0]) // 2:  # the code is square: two rows of modules a line
                qr.append(process.stdout.readline().rstrip("\n"))
            return link, qr
    pytest.fail("no pairing link was printed")


def decode_terminal_qr(lines: list[str]) -> list[str]:
    """Read a QR code drawn with block characters (light modules as blocks)."""
    dark = {"\u2588": (False, False), "\u2584": (True, False), "\u2580": (False, True), " ": (True, True)}
    return read_qr([[dark[c][half] for c in line] for line in lines for half in (0, 1)])


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_lan_prints_a_one_time_link_and_its_qr_code(tls: bool) -> None:
    if tls:
        pytest.importorskip("cryptography")
    pytest.importorskip("segno")
    import urllib.error
    import urllib.request

    process, url = start("--lan", "--host", "127.0.0.1", *(("--tls",) if tls else ()))
    try:
        link, qr = read_pairing(process)
        scheme = "https" if tls else "http"
        assert url.startswith("wss://" if tls else "ws://") and link.startswith(f"{scheme}://127.0.0.1:")
        assert decode_terminal_qr(qr) == [link]
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # the certificate is self-signed

        class Stay(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None  # see the 303 itself

        opener = urllib.request.build_opener(Stay, urllib.request.HTTPSHandler(context=insecure))
        with pytest.raises(urllib.error.HTTPError) as first:
            opener.open(link, timeout=DEADLINE)
        assert first.value.code == 303 and "HttpOnly" in first.value.headers["Set-Cookie"]
        with pytest.raises(urllib.error.HTTPError) as second:
            opener.open(link, timeout=DEADLINE)
        assert second.value.code == 403
        # The next device gets a new link, printed with its code.
        next_link, next_qr = read_pairing(process)
        assert next_link != link and decode_terminal_qr(next_qr) == [next_link]
    finally:
        assert stop(process) == 0


def test_tls_without_lan_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "wsserver", "--tls"], capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2 and "--tls goes with --lan" in result.stderr
