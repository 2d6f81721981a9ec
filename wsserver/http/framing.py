"""How an HTTP/1.x response is framed on the wire (RFC 9112), sans-I/O.

:func:`plan_response` decides, from a :class:`~.response.Response`, the
request it answers and whether the connection may persist, what the response
head says and how its body is delimited; :func:`frame_chunk` and
:func:`end_of_body` then give the bytes to write for each body chunk and
after the last one. Nothing here touches a socket or a clock (beyond the
default ``Date`` value): the connection driver writes what these functions
return.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .headers import Headers
from .request import Request
from .response import SERVER_NAME, Response, http_date, render_head

__all__ = ["BodyFraming", "ResponsePlan", "plan_response", "frame_chunk", "end_of_body"]


class BodyFraming(enum.Enum):
    """How the end of a response body is known (RFC 9112 section 6.3)."""

    #: No body bytes on the wire: a response to HEAD, or a 1xx, 204 or 304 (rule 1).
    NONE = "none"
    #: ``Content-Length`` gives the body's size (rule 6): a bytes body, or a
    #: streamed body whose application set the header itself.
    CONTENT_LENGTH = "length"
    #: Chunked transfer coding (rule 4; the coding is RFC 9112 section 7.1).
    CHUNKED = "chunked"
    #: No declared length: the body ends when the server closes the connection (rule 8).
    CLOSE_DELIMITED = "close"


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What :func:`plan_response` decided for one response."""

    #: The status line and header lines, ending with the empty line, ready to write.
    head: bytes
    #: How the body that follows the head is delimited.
    framing: BodyFraming
    #: Whether the connection may serve another request after this response.
    keep_alive: bool


def plan_response(response: Response, request: Request | None, keep_alive: bool, date: str | None = None, tls: bool = False) -> ResponsePlan:
    """Render the head of ``response`` and choose the framing of its body.

    :param request: the request answered, or None for the error answer to
        one that could not be parsed (taken as a non-HEAD HTTP/1.1 request).
    :param keep_alive: whether the connection may persist as far as the
        caller knows (the request's own wish, the server not stopping, not
        an error answer); the plan's ``keep_alive`` may only turn it off.
    :param date: the ``Date`` value, :func:`~.response.http_date` by default.
    :param tls: whether the connection is TLS (cookies are then ``Secure`` by default).

    The head starts with ``Date`` and ``Server``, then the response's
    headers, then the framing and ``Connection`` headers chosen here.
    """
    headers = Headers([("Date", http_date() if date is None else date), ("Server", SERVER_NAME)])
    for name, value in response.headers.raw_items():
        headers.add(name, value)
    for cookie in response.cookies:
        headers.add("Set-Cookie", cookie.header_value(tls))
    body = response.body
    http10 = request is not None and request.version == "HTTP/1.0"
    # After a request that could not be parsed, where the next one starts is
    # unknown: the connection cannot be reused.
    keep_alive = keep_alive and request is not None
    if "close" in (token.strip().lower() for token in headers.get("Connection", "").split(",")):
        # RFC 9112 section 9.6: a response that says "close" ends the connection.
        keep_alive = False
    if response.status < 200 or response.status in (204, 304):
        # RFC 9112 section 6.3, rule 1: these responses end with their head.
        # No Content-Length is added (RFC 9110 section 8.6 forbids it on 1xx
        # and 204); one the application set is sent as it is.
        framing = BodyFraming.NONE
    elif isinstance(body, (bytes, bytearray, memoryview)):
        # RFC 9112 section 6.3, rule 6 (the header is RFC 9110 section 8.6).
        headers["Content-Length"] = str(memoryview(body).nbytes)
        framing = BodyFraming.CONTENT_LENGTH
    elif "Content-Length" in headers:
        # A streamed body whose size the application declared (rule 6).
        framing = BodyFraming.CONTENT_LENGTH
    elif http10:
        # RFC 9112 section 6.1: no Transfer-Encoding to an HTTP/1.0 client,
        # so the close ends the body (section 6.3, rule 8) and, as a message
        # with no self-defined length, the connection cannot persist
        # (section 9.3).
        framing = BodyFraming.CLOSE_DELIMITED
        keep_alive = False
    else:
        # RFC 9112 sections 6.1 and 6.3, rule 4: chunked coding (section 7.1).
        headers["Transfer-Encoding"] = "chunked"
        framing = BodyFraming.CHUNKED
    if request is not None and request.method == "HEAD":
        # RFC 9112 section 6.3, rule 1: the head is the one a GET would get
        # (RFC 9110 section 9.3.2), Content-Length included, without content.
        framing = BodyFraming.NONE
    if not keep_alive:
        # RFC 9112 section 9.6: "close" announces that the server closes after this response.
        headers["Connection"] = "close"
    elif http10:
        # RFC 9112 section 9.3 and appendix C.2.2: an HTTP/1.0 connection
        # persists only if the response says so too.
        headers["Connection"] = "keep-alive"
    return ResponsePlan(render_head(response.status, headers.raw_items()), framing, keep_alive)


def frame_chunk(framing: BodyFraming, chunk: bytes | bytearray | memoryview) -> tuple[bytes | bytearray | memoryview, ...]:
    """The pieces to write, in order, for one chunk of a streamed body.

    An empty chunk gives nothing to write: in chunked coding a zero-size
    chunk is the last-chunk and would end the body (RFC 9112 section 7.1).
    """
    size = memoryview(chunk).nbytes
    if framing is BodyFraming.NONE or not size:
        return ()
    if framing is BodyFraming.CHUNKED:
        # chunk = chunk-size CRLF chunk-data CRLF (RFC 9112 section 7.1).
        return (b"%x\r\n" % size, chunk, b"\r\n")
    return (chunk,)


def end_of_body(framing: BodyFraming) -> bytes:
    """What to write after the last chunk: the last-chunk and the empty
    trailer section for chunked coding (RFC 9112 section 7.1), else nothing."""
    return b"0\r\n\r\n" if framing is BodyFraming.CHUNKED else b""
