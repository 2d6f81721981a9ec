"""Property tests of the HTTP request parser and the upgrade check: random
and mutated request streams, fed in random chunks.

Whatever comes in, :class:`RequestParser` gives complete requests or raises
:class:`HttpError` with a status the server may answer with, never another
exception, whatever the chunking; requests it accepts come out the same
whatever the chunking, and well-formed ones round-trip. ``parse_upgrade``
on any parsed request raises only :class:`HandshakeError` with 4xx status.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wsserver.http.request import HttpError, RequestParser
from wsserver.protocol import HandshakeError, parse_upgrade

STATUSES = {400, 413, 414, 431, 501, 505}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tokens = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)
paths = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~?=&", max_size=8) | st.just("%20") | st.just("%C3%A9"), max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def requests(draw):
    """A well-formed request: (bytes, method, target, headers, body)."""
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS"]) | tokens)
    target = draw(paths)
    headers = [("Host", "example")] + draw(st.lists(st.tuples(tokens.filter(lambda n: n.lower() not in {"host", "content-length", "transfer-encoding"}), values), max_size=6))
    body = b""
    if draw(st.booleans()):
        body = draw(st.binary(max_size=40))
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode() + body, method, target, headers, body


upgrade_headers = st.lists(st.sampled_from([
    "Upgrade: websocket", "Upgrade: WebSocket, h2c", "Upgrade: h2c", "Connection: Upgrade", "Connection: keep-alive, upgrade",
    "Connection: close", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 13, 8", "Sec-WebSocket-Protocol: chat, , superchat",
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits", "Origin: http://a", "Origin: http://a",
    "Host: x", "Host: y",
]), max_size=10)


@st.composite
def upgrade_requests(draw):
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    method = draw(st.sampled_from(["GET", "GET", "POST"]))
    return (f"{method} /ws {version}\r\n" + "".join(h + "\r\n" for h in draw(upgrade_headers)) + "\r\n").encode()


@st.composite
def mutated(draw, data: bytes):
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "crlf"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 6))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b" ", b":", b"\x00", b"\x80"]))
    return bytes(data)


streams = st.one_of(
    st.binary(max_size=300),
    st.lists(requests().map(lambda r: r[0]), min_size=1, max_size=3).map(b"".join),
    st.lists(requests().map(lambda r: r[0]), min_size=1, max_size=3).map(b"".join).flatmap(mutated),
    upgrade_requests(),
    upgrade_requests().flatmap(mutated),
)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def parse(chunks: list[bytes], **limits) -> tuple[list, int | None, bool]:
    """Every request the parser gives for ``chunks``, the status of the
    error that ended it (if any), and whether a partial request is left."""
    parser = RequestParser(**limits)
    parsed = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (request := parser.next_request()) is not None:
                parsed.append(request)
    except HttpError as exc:
        assert exc.status in STATUSES, exc
        assert exc.message
        return parsed, exc.status, True
    return parsed, None, parser.has_partial_request


def summary(request) -> tuple:
    return request.method, request.target, request.version, request.headers.raw_items(), request.body


@SETTINGS
@given(streams, st.lists(st.integers(0, 1000), max_size=10), st.sampled_from([{}, {"max_request_line": 16, "max_header_bytes": 64, "max_header_count": 3, "max_body_size": 8}]))
@example(b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", [], {})
@example(b"GET /ws HTTP/1.0\r\n\r\n", [17], {"max_request_line": 16})  # the CR and LF of a line at the limit in two reads
@example(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", [], {})
@example(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", [], {})
def test_only_http_errors_with_a_status_and_chunking_does_not_matter(data, cuts, limits):
    whole, whole_status, whole_partial = parse([data], **limits)
    pieces, pieces_status, _ = parse(cut(data, cuts), **limits)
    assert [summary(r) for r in pieces] == [summary(r) for r in whole]
    if whole_status is not None:
        assert pieces_status is not None
    elif pieces_status is not None:
        # Fed in pieces, a line was seen over its limit before its end came;
        # at once, the parser saw its end and waits for the rest of the head
        # (it will refuse it then: the line is still too long).
        assert pieces_status in (414, 431) and whole_partial
    for request in whole:
        try:
            parse_upgrade(request.method, request.version, request.headers)
        except HandshakeError as exc:
            assert 400 <= exc.status < 500


@SETTINGS
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 1000), max_size=10))
def test_well_formed_requests_round_trip(batch, cuts):
    parsed, status, partial = parse(cut(b"".join(r[0] for r in batch), cuts))
    assert status is None and not partial
    assert [(r.method, r.target, r.headers.raw_items(), r.body) for r in parsed] == [
        (method, target, headers, body) for _, method, target, headers, body in batch
    ]
