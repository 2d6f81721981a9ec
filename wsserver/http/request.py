"""HTTP/1.1 requests (RFC 9112): the :class:`Request` type and an
incremental, sans-I/O :class:`RequestParser` with size limits.

Feed the parser bytes as they arrive and ask it for complete requests; it
raises :class:`HttpError` with the status to answer when the input is bad or
too big. Pipelined requests come out one by one, in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote

from .errors import HttpError
from .forms import MAX_FORM_FIELDS, FormData, parse_cookies, parse_form, parse_json
from .headers import Headers
from .sessions import Session
from .uploads import Files, UploadedFile

__all__ = ["HttpError", "Request", "RequestParser"]


@dataclass
class Request:
    """A parsed HTTP request.

    ``path`` is percent-decoded and has no query; ``raw_path`` is as sent.
    ``query`` maps each parameter to its last value (``query_string`` is the
    raw text, for repeated parameters use :func:`urllib.parse.parse_qs` on it).
    """

    method: str
    target: str
    version: str
    headers: Headers
    body: bytes = b""
    client_address: tuple[Any, ...] | None = None
    path: str = field(init=False)
    raw_path: str = field(init=False)
    query_string: str = field(init=False)
    query: dict[str, str] = field(init=False)
    #: The parameters of the route that matched (``/items/{id:int}``), by name.
    path_params: dict[str, Any] = field(init=False, default_factory=dict)
    #: The files of a streamed ``multipart/form-data`` body, by field name
    #: (see ``HttpServer.route(stream=True)``); empty for other requests.
    files: Files = field(init=False, default_factory=lambda: Files([]))
    #: A streamed body of another content type, received whole into one file.
    body_file: UploadedFile | None = field(init=False, default=None)
    _form: FormData | None = field(init=False, default=None, repr=False)
    _session: Session | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        raw_path, _, self.query_string = self.target.partition("?")
        self.raw_path = raw_path
        self.path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
        self.query = dict(parse_qsl(self.query_string, keep_blank_values=True))

    def form(self, max_fields: int = MAX_FORM_FIELDS) -> FormData:
        """The fields of an ``application/x-www-form-urlencoded`` body, or
        the text fields of a streamed ``multipart/form-data`` one (its
        files are in :attr:`files`). Raises :class:`HttpError` (answered
        as such when a route lets it through): 400 for another content
        type or a field that is not UTF-8, 413 for more than ``max_fields``
        fields."""
        if self._form is not None:
            return self._form
        return parse_form(self.body, self.headers.get("Content-Type"), max_fields)

    def set_form(self, form: FormData) -> None:
        """What :meth:`form` returns from now on (the fields of a multipart body)."""
        self._form = form

    def json(self) -> Any:
        """The value of a JSON body. Raises :class:`HttpError` 400 for
        another content type or a body that is not JSON."""
        return parse_json(self.body, self.headers.get("Content-Type"))

    @property
    def session(self) -> Session:
        """The signed session cookie's values (see :mod:`wsserver.http.sessions`).
        Raises ``LookupError`` when the server has no sessions
        (``server.http_server.sessions = Sessions()`` turns them on)."""
        if self._session is None:
            raise LookupError("sessions are off: server.http_server.sessions = wsserver.http.Sessions() turns them on")
        return self._session

    @session.setter
    def session(self, session: Session) -> None:
        self._session = session

    @cached_property
    def cookies(self) -> dict[str, str]:
        """The request's cookies, by name (the first of a name wins)."""
        return parse_cookies(self.headers.get_all("Cookie"))

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer (RFC 9112 section 9.3)."""
        tokens = {t.strip().lower() for v in self.headers.get_all("Connection") for t in v.split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?")
# Field values: visible characters, spaces, tabs and obs-text; no CR, LF or NUL.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f-\xff]")


class RequestParser:
    """Incremental parser of one connection's stream of HTTP/1.1 requests.

    :param max_request_line: longest request line (414 beyond it).
    :param max_header_bytes: most bytes of header lines in one request (431).
    :param max_header_count: most header lines in one request (431).
    :param max_body_size: largest request body (413).
    :param body_plan: called with each request once its head is parsed,
        before any of its body is read: the largest body it may have (413
        beyond) and whether its body is *streamed*. A streamed request comes
        out of :meth:`next_request` at once, with an empty ``body``; its body
        is then taken with :meth:`read_body` until :attr:`body_streaming`
        turns false. Without a plan, every body is buffered, up to
        ``max_body_size``.

    A buffered body is assembled as it arrives in one buffer (sized from
    ``Content-Length`` when there is one), so no call does work that grows
    with the body's size but the last one, which makes it ``bytes`` with
    one copy (as a WebSocket message is).
    """

    def __init__(
        self,
        max_request_line: int = 8 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_header_count: int = 100,
        max_body_size: int = 1024 * 1024,
        body_plan: Callable[[Request], tuple[int, bool]] | None = None,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.max_body_size = max_body_size
        self.body_plan = body_plan
        self._buffer = bytearray()
        self._scan_from = 0
        # A request whose head is parsed and whose body is still arriving.
        self._pending: Request | None = None
        self._streaming = False
        self._body = _BodyDecoder(0, chunked=False, limit=0)
        self._assembled: bytearray | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    @property
    def has_partial_request(self) -> bool:
        """Whether bytes of a request that is not complete yet are buffered."""
        return bool(self._buffer) or self._pending is not None or self._streaming

    @property
    def awaiting_body(self) -> Request | None:
        """The request whose head is parsed and whose body has not all arrived."""
        return self._pending

    @property
    def body_streaming(self) -> bool:
        """Whether the body of the last request returned is still being read
        (with :meth:`read_body`)."""
        return self._streaming

    @property
    def buffered_size(self) -> int:
        """Bytes received and not yet parsed into a request."""
        return len(self._buffer)

    def take_buffered(self) -> bytes:
        """Remove and return the unparsed bytes (those after an upgrade request)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        self._scan_from = 0
        return data

    def next_request(self) -> Request | None:
        """The next complete request (or the head of a streamed one), or
        None until more bytes arrive."""
        if self._streaming:
            raise RuntimeError("the streamed body of the last request is not read yet")
        if self._pending is None:
            head = self._take_head()
            if head is None:
                return None
            request, length, chunked = self._parse_head(head)
            limit, streamed = self.body_plan(request) if self.body_plan is not None else (self.max_body_size, False)
            if length is not None and length > limit:
                raise HttpError(413, _too_large(limit, streamed))
            self._body = _BodyDecoder(length or 0, chunked, limit, _too_large(limit, streamed))
            if streamed:
                self._streaming = not self._body.done
                return request
            self._pending = request
            self._assembled = bytearray(length) if length else bytearray() if chunked else None
        request = self._pending
        assembled = self._assembled
        if assembled is not None:
            body = self._body
            buf = self._buffer
            while (size := body.span(buf, len(buf))) > 0:
                start = body.received - size
                with memoryview(buf) as view:
                    if body.chunked:
                        assembled += view[:size]
                    else:
                        assembled[start : start + size] = view[:size]
                del buf[:size]
            if not body.done:
                return None
            request.body = bytes(assembled)
            self._assembled = None
        self._pending = None
        return request

    def read_body(self, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes`` of the streamed body, or None when none has
        arrived (or the body is over: :attr:`body_streaming` is then false).
        Raises :class:`HttpError` for bad chunked coding (400) or a body
        over its limit (413)."""
        if not self._streaming:
            return None
        buf = self._buffer
        size = self._body.span(buf, max_bytes)
        if size == 0:
            self._streaming = not self._body.done
            return None
        with memoryview(buf) as view:
            piece = bytes(view[:size])
        del buf[:size]
        return piece

    # -- head ------------------------------------------------------------

    def _take_head(self) -> bytes | None:
        buf = self._buffer
        # Leading empty lines before a request are ignored (RFC 9112 section 2.2).
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            # A request starts with a method, a token (or with an empty
            # line): a first byte that cannot start one is no HTTP (a TLS
            # ClientHello on the plain port, say), answered at once instead
            # of when the handshake timeout ends the wait for a whole line.
            if buf and not _TOKEN.match(buf, 0, 1) and buf[0] != 0x0D:
                raise HttpError(400, "not an HTTP request (TLS to a plain-HTTP port?)")
            self._scan_from = max(0, len(buf) - 3)
            line_end = buf.find(b"\r\n")
            # One byte of slack: a line of exactly the limit may have its
            # CR in this read and its LF in the next.
            if line_end < 0 and len(buf) > self.max_request_line + 1:
                raise HttpError(414, "request line too long")
            if len(buf) > self.max_request_line + self.max_header_bytes:
                raise HttpError(431, "request headers too large")
            return None
        head = bytes(buf[:end])
        del buf[: end + 4]
        self._scan_from = 0
        return head

    def _parse_head(self, head: bytes) -> tuple[Request, int | None, bool]:
        """The request of ``head``, its body's ``Content-Length`` (None if
        it has none) and whether the body is chunked."""
        request_line, _, header_block = head.partition(b"\r\n")
        if len(request_line) > self.max_request_line:
            raise HttpError(414, "request line too long")
        if len(header_block) > self.max_header_bytes:
            raise HttpError(431, "request headers too large")
        parts = request_line.split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        match = _VERSION.fullmatch(version)
        if not match:
            raise HttpError(400, "malformed HTTP version")
        if match.group(1) != b"1":
            raise HttpError(505, "only HTTP/1.x is supported")
        if _BAD_TARGET.search(target) or not (target.startswith(b"/") or target == b"*" or b"://" in target):
            raise HttpError(400, "malformed request target")
        headers = Headers()
        lines = header_block.split(b"\r\n") if header_block else []
        if len(lines) > self.max_header_count:
            raise HttpError(431, "too many request headers")
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise HttpError(400, "malformed header line")
            value = value.strip(b" \t")
            if _BAD_VALUE.search(value):
                raise HttpError(400, "invalid character in a header value")
            headers.add(name.decode("ascii"), value.decode("latin-1"))
        version_text = version.decode("ascii")
        if version_text == "HTTP/1.1" and len(headers.get_all("Host")) != 1:
            raise HttpError(400, "HTTP/1.1 request needs exactly one Host header")
        target_text = target.decode("ascii")
        if "://" in target_text:  # absolute-form: keep the path part only
            target_text = "/" + target_text.split("://", 1)[1].partition("/")[2]
        try:
            request = Request(method.decode("ascii"), target_text, version_text, headers)
        except UnicodeDecodeError:
            raise HttpError(400, "request path is not valid UTF-8 once decoded") from None
        length, chunked = _body_framing(headers)
        return request, length, chunked


def _too_large(limit: int, streamed: bool) -> str:
    if streamed:
        return f"request body over {limit} bytes"
    return f"request body over {limit} bytes (a route takes more with max_body_size, or streams it with stream=True)"


def _body_framing(headers: Headers) -> tuple[int | None, bool]:
    """The body's ``Content-Length`` (None without one) and whether it is
    chunked (RFC 9112 section 6.3)."""
    transfer = [t.strip().lower() for v in headers.get_all("Transfer-Encoding") for t in v.split(",")]
    lengths = {v.strip() for v in headers.get_all("Content-Length")}
    if transfer:
        if lengths:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if transfer != ["chunked"]:
            raise HttpError(501, "only the chunked transfer coding is supported")
        return None, True
    if not lengths:
        return None, False
    if len(lengths) > 1 or not all(c in "0123456789" for c in next(iter(lengths))) or not next(iter(lengths)):
        raise HttpError(400, "invalid Content-Length")
    return int(next(iter(lengths))), False


class _BodyDecoder:
    """Where the body data is in a connection's buffer: it strips the
    chunked coding's framing (RFC 9112 section 7.1) from the front of the
    buffer as it comes, and counts the data against the body's limit."""

    __slots__ = ("chunked", "limit", "too_large", "received", "done", "_data_left", "_after_data", "_in_trailer")

    def __init__(self, length: int, chunked: bool, limit: int, too_large: str = "") -> None:
        self.chunked = chunked
        self.limit = limit
        self.too_large = too_large  # the 413's message
        #: Body bytes handed out so far (by :meth:`span`).
        self.received = 0
        self.done = not chunked and not length
        # Bytes of data still to come: the rest of the Content-Length, or of the current chunk.
        self._data_left = length
        self._after_data = False  # a chunk's data ended: its CRLF comes next
        self._in_trailer = False

    def span(self, buf: bytearray, max_bytes: int) -> int:
        """How many bytes at the front of ``buf`` are body data (at most
        ``max_bytes``; 0 when none is there yet, or the body is over). The
        caller takes them and deletes them from ``buf``; they count as
        received."""
        while not self._data_left:
            if self.done or not self._next_chunk(buf):
                return 0
        size = min(self._data_left, len(buf), max_bytes)
        self._data_left -= size
        self.received += size
        if not self._data_left and not self.chunked:
            self.done = True
        return size

    def _next_chunk(self, buf: bytearray) -> bool:
        """Strip framing up to the next chunk's data or the body's end;
        False while more bytes are needed."""
        if self._in_trailer:
            # The trailer section, ended by an empty line, is skipped.
            end = 0 if buf[:2] == b"\r\n" else buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 64 * 1024:
                    raise HttpError(431, "chunked trailer too large")
                return False
            del buf[: end + (2 if end == 0 else 4)]
            self.done = True
            return True
        if self._after_data:
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise HttpError(400, "chunk not followed by CRLF")
            del buf[:2]
            self._after_data = False
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > 1024:
                raise HttpError(400, "chunk size line too long")
            return False
        match = _CHUNK_SIZE.fullmatch(bytes(buf[:line_end]))
        if not match:
            raise HttpError(400, "malformed chunk size")
        size = int(match.group(1), 16)
        del buf[: line_end + 2]
        if size == 0:
            self._in_trailer = True
            return True
        if self.received + size > self.limit:
            raise HttpError(413, self.too_large)
        self._data_left = size
        self._after_data = True
        return True
