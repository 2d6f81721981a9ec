"""handshake.py: upgrade validation and the accept key."""

from __future__ import annotations

import pytest

import wsserver
from wsserver.http.headers import Headers
from wsserver.protocol.handshake import HandshakeError, accept_headers, parse_upgrade

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def good_headers(**changes: str | None) -> Headers:
    fields = {
        "Host": "localhost",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in changes.items()})
    return Headers([(k, v) for k, v in fields.items() if v is not None])


def test_rfc_example_accept_key() -> None:
    # RFC 6455 section 1.3.
    assert wsserver.get_sec_accept(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in accept_headers(KEY)


def test_module_functions() -> None:
    import base64

    key = wsserver.get_sec_key()
    assert len(base64.b64decode(key)) == 16 and key != wsserver.get_sec_key()
    assert wsserver.sha1_base64("abc") == "qZk+NkcGgWq6PiVxeFDCbJzQ2J0="
    assert wsserver.sha1_base64(b"abc") == wsserver.sha1_base64("abc")


def test_valid_request_with_case_and_token_lists() -> None:
    headers = good_headers(Upgrade="WebSocket", Connection="keep-alive, UPGRADE")
    headers.add("Sec-WebSocket-Protocol", "chat, superchat")
    headers.add("Sec-WebSocket-Protocol", "v2")
    headers.add("Origin", "http://example.test")
    offer = parse_upgrade("GET", "HTTP/1.1", headers)
    assert offer.key == KEY
    assert offer.subprotocols == ["chat", "superchat", "v2"]
    assert offer.origin == "http://example.test"


def test_chosen_subprotocol_is_echoed() -> None:
    assert ("Sec-WebSocket-Protocol", "chat") in accept_headers(KEY, "chat")
    assert all(name != "Sec-WebSocket-Protocol" for name, _ in accept_headers(KEY))


BAD = {
    "POST": ("POST", "HTTP/1.1", good_headers(), 405),
    "HTTP/1.0": ("GET", "HTTP/1.0", good_headers(), 400),
    "no Host": ("GET", "HTTP/1.1", good_headers(Host=None), 400),
    "no Upgrade": ("GET", "HTTP/1.1", good_headers(Upgrade=None), 400),
    "Upgrade: h2c": ("GET", "HTTP/1.1", good_headers(Upgrade="h2c"), 400),
    "no Connection: upgrade": ("GET", "HTTP/1.1", good_headers(Connection="keep-alive"), 400),
    "no key": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Key=None), 400),
    "key not base64": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Key="not base64!!"), 400),
    "key of 15 bytes": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAA"), 400),
    "non-ASCII key": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Key="é" * 24), 400),
    "version 8": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Version="8"), 426),
    "no version": ("GET", "HTTP/1.1", good_headers(Sec_WebSocket_Version=None), 426),
}


@pytest.mark.parametrize("method, version, headers, status", BAD.values(), ids=BAD.keys())
def test_bad_requests_are_refused_with_a_reason(method: str, version: str, headers: Headers, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_upgrade(method, version, headers)
    assert info.value.status == status
    assert info.value.message
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers


def test_two_keys_are_refused() -> None:
    headers = good_headers()
    headers.add("Sec-WebSocket-Key", KEY)
    with pytest.raises(HandshakeError, match="more than one"):
        parse_upgrade("GET", "HTTP/1.1", headers)
