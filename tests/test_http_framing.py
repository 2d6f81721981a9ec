"""The sans-I/O response framing of wsserver.http.framing: the head that
plan_response renders (parsed back line by line), the body framing and
persistence it chooses for each kind of request, status and body, and the
bytes frame_chunk / end_of_body give for each framing. No sockets."""

from __future__ import annotations

import array
from collections.abc import Iterator

import pytest

from wsserver.http.framing import BodyFraming, ResponsePlan, end_of_body, frame_chunk, plan_response
from wsserver.http.headers import Headers
from wsserver.http.request import Request
from wsserver.http.response import SERVER_NAME, Response
from wsserver.http.sse import EventStream

DATE = "Sun, 06 Nov 1994 08:49:37 GMT"


def make_request(method: str = "GET", version: str = "HTTP/1.1", connection: str | None = None) -> Request:
    headers = Headers([("Host", "example.test")])
    if connection is not None:
        headers.add("Connection", connection)
    return Request(method, "/", version, headers)


def chunks() -> Iterator[bytes]:
    yield b"hello, "
    yield b"world"


def plan(response: Response, request: Request | None, keep_alive: bool | None = None) -> ResponsePlan:
    """plan_response as the driver calls it: the request's own keep-alive wish unless told otherwise."""
    if keep_alive is None:
        keep_alive = request.keep_alive if request is not None else False
    return plan_response(response, request, keep_alive, date=DATE)


class Head:
    """A rendered response head, parsed back."""

    def __init__(self, raw: bytes) -> None:
        assert raw.endswith(b"\r\n\r\n") and raw.count(b"\r\n\r\n") == 1
        status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
        self.version, status, self.reason = status_line.split(" ", 2)
        self.status = int(status)
        self.fields: list[tuple[str, str]] = []
        for line in lines:
            name, sep, value = line.partition(": ")
            assert sep and name and "\r" not in value and "\n" not in value, line
            self.fields.append((name, value))

    @property
    def names(self) -> list[str]:
        return [name.lower() for name, _ in self.fields]

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.fields if n.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


# -- the head --------------------------------------------------------------


def test_status_line_then_date_and_server_first_then_the_response_headers() -> None:
    response = Response(b"hi", 404, [("X-First", "1"), ("X-Second", "2")], content_type="text/plain")
    head = Head(plan(response, make_request()).head)
    assert (head.version, head.status, head.reason) == ("HTTP/1.1", 404, "Not Found")
    assert head.fields == [
        ("Date", DATE),
        ("Server", SERVER_NAME),
        ("X-First", "1"),
        ("X-Second", "2"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "2"),
    ]


def test_date_defaults_to_now_as_an_imf_fixdate() -> None:
    head = Head(plan_response(Response(b""), make_request(), True).head)
    assert head.names[:2] == ["date", "server"]
    date = head.get("Date")
    assert date is not None and date.endswith(" GMT") and len(date) == 29


def test_repeated_response_headers_keep_their_order() -> None:
    response = Response(b"", headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    head = Head(plan(response, make_request()).head)
    assert head.get_all("Set-Cookie") == ["a=1", "b=2"]


# -- bytes bodies: Content-Length (RFC 9112 section 6.3, rule 6) ------------


@pytest.mark.parametrize("body", [b"twelve bytes", bytearray(b"twelve bytes"), memoryview(b"twelve bytes"), b""])
def test_a_bytes_body_gets_its_content_length(body: bytes | bytearray | memoryview) -> None:
    # Body is typed as bytes, but any bytes-like object is sent as one.
    result = plan(Response(body), make_request())  # type: ignore[arg-type]
    head = Head(result.head)
    assert result.framing is BodyFraming.CONTENT_LENGTH and result.keep_alive
    assert head.get("Content-Length") == str(len(bytes(body)))
    assert head.get("Transfer-Encoding") is None and head.get("Connection") is None


def test_the_content_length_counts_bytes_not_items() -> None:
    body = memoryview(array.array("i", [1, 2, 3]))
    head = Head(plan(Response(body), make_request()).head)  # type: ignore[arg-type]
    assert head.get("Content-Length") == str(3 * array.array("i").itemsize)


def test_the_real_length_replaces_an_application_content_length() -> None:
    head = Head(plan(Response(b"abc", headers=[("Content-Length", "99")]), make_request()).head)
    assert head.get_all("Content-Length") == ["3"]


# -- statuses without content (RFC 9112 section 6.3, rule 1) -----------------


@pytest.mark.parametrize("status", [100, 103, 204, 304])
@pytest.mark.parametrize("streamed", [False, True])
def test_1xx_204_and_304_have_no_body_and_no_framing_headers(status: int, streamed: bool) -> None:
    response = Response(chunks() if streamed else b"ignored", status)
    for request in (make_request(), make_request(version="HTTP/1.0", connection="keep-alive")):
        result = plan(response, request)
        head = Head(result.head)
        assert head.status == status
        assert result.framing is BodyFraming.NONE and result.keep_alive
        assert head.get("Content-Length") is None and head.get("Transfer-Encoding") is None


def test_an_application_content_length_on_a_304_is_kept() -> None:
    # The length the unconditional GET would have had (RFC 9110 section 8.6).
    head = Head(plan(Response(b"", 304, [("Content-Length", "1234")]), make_request()).head)
    assert head.get_all("Content-Length") == ["1234"]


# -- HEAD -----------------------------------------------------------------


def test_head_gets_the_content_length_of_the_bytes_body_but_no_body() -> None:
    result = plan(Response(b"hello"), make_request("HEAD"))
    assert result.framing is BodyFraming.NONE and result.keep_alive
    assert Head(result.head).get("Content-Length") == "5"


def test_head_of_a_streamed_body_announces_chunked_like_get_but_sends_nothing() -> None:
    result = plan(Response(chunks()), make_request("HEAD"))
    head = Head(result.head)
    assert result.framing is BodyFraming.NONE and result.keep_alive
    assert head.get("Transfer-Encoding") == "chunked" and head.get("Content-Length") is None
    assert head.get("Connection") is None


def test_head_of_a_streamed_body_with_its_content_length() -> None:
    result = plan(Response(chunks(), headers=[("Content-Length", "12")]), make_request("HEAD"))
    head = Head(result.head)
    assert result.framing is BodyFraming.NONE and result.keep_alive
    assert head.get("Content-Length") == "12" and head.get("Transfer-Encoding") is None


def test_http10_head_of_a_streamed_body_closes_the_connection_as_get_would() -> None:
    result = plan(Response(chunks()), make_request("HEAD", "HTTP/1.0", "keep-alive"))
    head = Head(result.head)
    assert result.framing is BodyFraming.NONE and not result.keep_alive
    assert head.get("Connection") == "close" and head.get("Transfer-Encoding") is None


# -- streamed bodies --------------------------------------------------------


def test_a_streamed_body_is_chunked_for_http11() -> None:
    result = plan(Response(chunks()), make_request())
    head = Head(result.head)
    assert result.framing is BodyFraming.CHUNKED and result.keep_alive
    assert head.get("Transfer-Encoding") == "chunked" and head.get("Content-Length") is None
    assert head.names[-1] == "transfer-encoding" and head.get("Connection") is None


def test_an_event_stream_is_chunked() -> None:
    stream = EventStream()
    result = plan(Response(stream, headers=EventStream.headers), make_request())
    head = Head(result.head)
    assert result.framing is BodyFraming.CHUNKED
    assert head.get("Content-Type") == "text/event-stream; charset=utf-8" and head.get("Transfer-Encoding") == "chunked"
    stream.close()


def test_a_transfer_encoding_of_the_application_is_replaced_by_chunked() -> None:
    head = Head(plan(Response(chunks(), headers=[("Transfer-Encoding", "gzip")]), make_request()).head)
    assert head.get_all("Transfer-Encoding") == ["chunked"]


@pytest.mark.parametrize(
    "request_", [make_request(), make_request(version="HTTP/1.0", connection="keep-alive")], ids=["1.1", "1.0-keep-alive"]
)
def test_a_streamed_body_with_its_own_content_length_is_not_chunked(request_: Request) -> None:
    result = plan(Response(chunks(), headers=[("content-length", "12")]), request_)
    head = Head(result.head)
    assert result.framing is BodyFraming.CONTENT_LENGTH and result.keep_alive
    assert head.get("Content-Length") == "12" and head.get("Transfer-Encoding") is None


def test_a_streamed_body_for_http10_is_delimited_by_the_close() -> None:
    request = make_request(version="HTTP/1.0", connection="keep-alive")
    assert request.keep_alive
    result = plan(Response(chunks()), request)
    head = Head(result.head)
    assert result.framing is BodyFraming.CLOSE_DELIMITED and not result.keep_alive
    assert head.get("Connection") == "close"
    assert head.get("Transfer-Encoding") is None and head.get("Content-Length") is None


# -- persistence (RFC 9112 section 9.3) --------------------------------------


def test_http10_keep_alive_is_answered_with_keep_alive() -> None:
    result = plan(Response(b"x"), make_request(version="HTTP/1.0", connection="Keep-Alive"))
    assert result.keep_alive and Head(result.head).get("Connection") == "keep-alive"


def test_http10_without_keep_alive_closes() -> None:
    result = plan(Response(b"x"), make_request(version="HTTP/1.0"))
    assert not result.keep_alive and Head(result.head).get("Connection") == "close"


def test_http11_keeps_alive_without_a_connection_header() -> None:
    result = plan(Response(b"x"), make_request())
    assert result.keep_alive and Head(result.head).get("Connection") is None


@pytest.mark.parametrize(
    "request_",
    [make_request(), make_request(connection="close"), make_request(version="HTTP/1.0", connection="keep-alive")],
    ids=["1.1", "1.1-close", "1.0-keep-alive"],
)
def test_keep_alive_false_says_close(request_: Request) -> None:
    # The caller's word (the server is stopping, the client asked) wins over the request's wish.
    result = plan(Response(b"x"), request_, keep_alive=False)
    assert not result.keep_alive and Head(result.head).get("Connection") == "close"


def test_closing_replaces_a_connection_header_of_the_application() -> None:
    head = Head(plan(Response(b"x", headers=[("Connection", "keep-alive")]), make_request(), keep_alive=False).head)
    assert head.get_all("Connection") == ["close"]


# -- the error answer to a request that could not be parsed ------------------


def test_an_error_answer_without_a_request_is_http11_with_its_length_and_closes() -> None:
    result = plan(Response("400 Bad Request\n", 400), None, keep_alive=False)
    head = Head(result.head)
    assert (head.version, head.status) == ("HTTP/1.1", 400)
    assert result.framing is BodyFraming.CONTENT_LENGTH and not result.keep_alive
    assert head.get("Content-Length") == "16" and head.get("Connection") == "close"


def test_an_error_answer_without_a_request_never_keeps_alive() -> None:
    result = plan(Response(b"x", 400), None, keep_alive=True)
    assert not result.keep_alive and Head(result.head).get("Connection") == "close"


def test_a_streamed_error_page_without_a_request_is_chunked_as_for_http11() -> None:
    result = plan(Response(chunks(), 500), None, keep_alive=False)
    head = Head(result.head)
    assert result.framing is BodyFraming.CHUNKED and not result.keep_alive
    assert head.get("Transfer-Encoding") == "chunked" and head.get("Connection") == "close"


# -- body chunks --------------------------------------------------------------


def test_a_chunk_in_chunked_coding_has_its_hex_size_and_crlf() -> None:
    data = b"z" * 255
    pieces = frame_chunk(BodyFraming.CHUNKED, data)
    assert pieces[0] == b"ff\r\n" and pieces[1] is data and pieces[2] == b"\r\n"


def test_a_chunk_size_counts_bytes() -> None:
    data = memoryview(array.array("i", [1, 2, 3, 4]))
    assert frame_chunk(BodyFraming.CHUNKED, data)[0] == b"%x\r\n" % data.nbytes


@pytest.mark.parametrize("framing", [BodyFraming.CONTENT_LENGTH, BodyFraming.CLOSE_DELIMITED])
def test_a_chunk_goes_as_it_is_without_chunked_coding(framing: BodyFraming) -> None:
    data = bytearray(b"abc")
    pieces = frame_chunk(framing, data)
    assert len(pieces) == 1 and pieces[0] is data


def test_nothing_is_written_for_a_body_that_must_not_be_sent() -> None:
    assert frame_chunk(BodyFraming.NONE, b"abc") == ()


@pytest.mark.parametrize("framing", list(BodyFraming))
@pytest.mark.parametrize("empty", [b"", bytearray(), memoryview(b"")])
def test_an_empty_chunk_is_never_written(framing: BodyFraming, empty: bytes | bytearray | memoryview) -> None:
    # In chunked coding a zero-size chunk would be the last-chunk, ending the body early.
    assert frame_chunk(framing, empty) == ()


@pytest.mark.parametrize(
    ("framing", "expected"),
    [
        (BodyFraming.CHUNKED, b"0\r\n\r\n"),
        (BodyFraming.CONTENT_LENGTH, b""),
        (BodyFraming.CLOSE_DELIMITED, b""),
        (BodyFraming.NONE, b""),
    ],
)
def test_end_of_body(framing: BodyFraming, expected: bytes) -> None:
    assert end_of_body(framing) == expected


def test_a_whole_chunked_body_on_the_wire() -> None:
    framing = plan(Response(chunks()), make_request()).framing
    wire = b"".join(bytes(p) for c in [b"hello, ", b"", b"world"] for p in frame_chunk(framing, c)) + end_of_body(framing)
    assert wire == b"7\r\nhello, \r\n5\r\nworld\r\n0\r\n\r\n"


def test_the_plan_is_immutable() -> None:
    result = plan(Response(b""), make_request())
    with pytest.raises(AttributeError):
        result.keep_alive = False  # type: ignore[misc]


# -- cross-check: an independent HTTP/1.1 client reads what we write ----------


@pytest.mark.parametrize(
    ("method", "response", "body", "reusable"),
    [
        ("GET", Response(b"hello, world"), b"hello, world", True),
        ("GET", Response(chunks()), b"hello, world", True),
        ("GET", Response(chunks(), headers=[("Content-Length", "12")]), b"hello, world", True),
        ("HEAD", Response(b"hello, world"), b"", True),
        ("HEAD", Response(chunks()), b"", True),
        ("GET", Response(b"ignored", 204), b"", True),
        ("GET", Response(b"", 304, [("Content-Length", "7")]), b"", True),
        ("GET", Response(b"bye"), b"bye", False),
    ],
)
def test_h11_reads_our_responses(method: str, response: Response, body: bytes, reusable: bool) -> None:
    h11 = pytest.importorskip("h11")
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "example.test")]))
    client.send(h11.EndOfMessage())
    result = plan_response(response, make_request(method), reusable, date=DATE)
    wire = result.head
    if method != "HEAD" and isinstance(response.body, (bytes, bytearray, memoryview)):
        wire += b"".join(bytes(p) for p in frame_chunk(result.framing, response.body))
    elif method != "HEAD":
        wire += b"".join(bytes(p) for c in chunks() for p in frame_chunk(result.framing, c))
    wire += end_of_body(result.framing)
    client.receive_data(wire)
    received = b""
    event = client.next_event()
    assert isinstance(event, h11.Response) and event.status_code == response.status
    while not isinstance(event, h11.EndOfMessage):
        event = client.next_event()
        assert event is not h11.NEED_DATA, "the response did not end where we said it does"
        if isinstance(event, h11.Data):
            received += event.data
    assert received == body
    if reusable:
        assert client.their_state is h11.DONE
        client.start_next_cycle()  # the connection can carry the next request
    else:
        assert client.their_state is h11.MUST_CLOSE


def test_h11_reads_a_close_delimited_body_to_the_end_of_the_stream() -> None:
    h11 = pytest.importorskip("h11")
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "example.test")]))
    client.send(h11.EndOfMessage())
    result = plan(Response(chunks()), make_request(version="HTTP/1.0", connection="keep-alive"))
    assert result.framing is BodyFraming.CLOSE_DELIMITED
    assert end_of_body(result.framing) == b""
    client.receive_data(result.head + b"".join(bytes(p) for c in chunks() for p in frame_chunk(result.framing, c)))
    client.receive_data(b"")  # the server closes: that ends the body
    events = []
    while (event := client.next_event()) is not h11.PAUSED:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"hello, world"
    assert isinstance(events[-1], h11.EndOfMessage)


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_response_that_says_close_ends_the_connection(version: str) -> None:
    request = make_request(version=version, connection="keep-alive")
    result = plan(Response(b"bye", headers={"Connection": "Close"}), request, keep_alive=True)
    head = Head(result.head)
    assert not result.keep_alive
    assert head.get_all("Connection") == ["close"]
