"""gzip for compressible answers (RFC 9110 section 8.4), within the poll
budget.

An answer is compressed when the client accepts gzip, its type is text
(HTML, CSS, JavaScript, JSON, XML, SVG, ...), it is a whole 200 answer of
at least :data:`MIN_SIZE` bytes, and it has no encoding yet. A body up to
one slice is compressed at once; a longer one (a big JSON answer, a static
file) is compressed a slice at a time as the connection takes it, like any
streamed body, so no poll step grows with its size. A static file's
compressed bytes are kept, by its path and validator, so the next request
for it costs no compression at all; a file with a pre-compressed sibling
(``app.js.gz`` beside ``app.js``) is served from that instead (see
:meth:`~wsserver.http.server.HttpServer`).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from . import static
from .forms import media_type
from .request import Request
from .response import Response
from .static import FileBody

__all__ = ["GzipCache", "accepts_gzip", "compressible", "gzip_response", "MIN_SIZE", "SLICE"]

#: Smaller answers are sent as they are: gzip's header and the extra work outweigh the saving.
MIN_SIZE = 1024
#: Bytes compressed in one unit of work: about a millisecond at level 6 for
#: text that compresses badly (this machine: 21 MB/s for JSON of random numbers).
SLICE = 16 * 1024
LEVEL = 6
# Types outside text/* that are text (text/event-stream is not compressed:
# its events must go out as they come, not when a compressor emits them).
_TEXT_TYPES = frozenset({"application/javascript", "application/json", "application/xml", "image/svg+xml", "application/manifest+json", "application/wasm"})


def _compressor() -> zlib._Compress:
    return zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip wrapper


def accepts_gzip(request: Request) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 section 12.5.3):
    ``gzip``, ``x-gzip`` or ``*`` with a non-zero weight, gzip not refused."""
    weights: dict[str, float] = {}
    for value in request.headers.get_all("Accept-Encoding"):
        for item in value.split(","):
            coding, _, params = item.partition(";")
            weight = 1.0
            name, _, number = params.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(number)
                except ValueError:
                    weight = 0.0
            weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip"):
        if coding in weights:
            return weights[coding] > 0
    return weights.get("*", 0.0) > 0


def compressible(content_type: str | None) -> bool:
    kind = media_type(content_type)
    if kind == "text/event-stream":
        return False
    return kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(("+json", "+xml"))


class GzipCache:
    """The compressed bytes of static files by (path, ETag), least recently
    used dropped first beyond ``max_bytes`` in all; a file whose compressed
    form is over ``max_entry`` is compressed each time instead."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024, max_entry: int = 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0

    def get(self, key: tuple[str, str]) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self.max_entry or key in self._entries:
            return
        self._entries[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped)


class GzipBody:
    """A body compressed :data:`SLICE` bytes of its source at a time. With
    a cache key, the whole compressed result is stored once complete."""

    def __init__(self, source: Iterator[bytes], cache: GzipCache | None = None, key: tuple[str, str] | None = None) -> None:
        self._source = source
        self._pending = memoryview(b"")
        self._compressor = _compressor()
        self._done = False
        self._cache = cache
        self._key = key
        self._kept: list[bytes] | None = [] if cache is not None and key is not None else None
        self._kept_size = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while not self._done:
            if not self._pending:
                try:
                    self._pending = memoryview(next(self._source))
                except StopIteration:
                    self._done = True
                    out = self._compressor.flush()
                    self._keep(out)
                    self._store()
                    return out
            piece, self._pending = self._pending[:SLICE], self._pending[SLICE:]
            out = self._compressor.compress(piece)
            if out:
                self._keep(out)
                return out
        raise StopIteration

    def _keep(self, data: bytes) -> None:
        if self._kept is not None and self._cache is not None:
            self._kept.append(data)
            self._kept_size += len(data)
            if self._kept_size > self._cache.max_entry:
                self._kept = None  # too big to keep: compressed each time

    def _store(self) -> None:
        if self._kept is not None and self._cache is not None and self._key is not None:
            self._cache.put(self._key, b"".join(self._kept))

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


def gzip_response(request: Request, response: Response, cache: GzipCache, path: str | None = None) -> Response:
    """``response``, gzip-compressed if it should be (see the module's
    doc); ``Vary: Accept-Encoding`` is added to every compressible answer,
    compressed or not, so that caches keep the two apart. ``path`` names
    the static file the body reads, for the cache.

    A 304 for that file gets the ``Vary`` and the ``ETag`` its 200 would
    have had (RFC 9110 section 15.4.5), and loses its ``Content-Length``
    when that 200 would have been compressed (section 8.6 allows it only
    when it equals the 200's).
    """
    headers = response.headers
    not_modified = response.status == 304 and path is not None
    kind: str | None = static.content_type(Path(path)) if not_modified and path is not None else headers.get("Content-Type")
    if not compressible(kind) or "Content-Encoding" in headers:
        return response
    headers.add("Vary", "Accept-Encoding")
    body = response.body
    if response.status not in (200, 304) or not accepts_gzip(request):
        return response
    if not_modified:
        if int(headers.get("Content-Length") or 0) < MIN_SIZE:
            return response
    elif isinstance(body, (bytes, bytearray, memoryview)):
        if len(body) < MIN_SIZE:
            return response
        if len(body) <= SLICE:
            compressor = _compressor()
            response.body = compressor.compress(body) + compressor.flush()
        else:
            response.body = GzipBody(iter([bytes(body)]))
    elif isinstance(body, FileBody):
        length = int(headers.get("Content-Length") or 0)
        if length < MIN_SIZE:
            return response
        etag = headers.get("ETag")
        key = (path, etag) if path and etag else None
        cached = cache.get(key) if key is not None else None
        if cached is not None:
            body.close()
            response.body = cached
        else:
            response.body = GzipBody(body, cache, key)
    else:
        return response  # an application's own stream: its chunks go out as it makes them
    headers.pop("Content-Length", None)  # framing decides it again: chunked, or the compressed size
    if not not_modified:
        headers["Content-Encoding"] = "gzip"
    headers.pop("Accept-Ranges", None)
    validator = headers.get("ETag")
    if validator is not None and not validator.startswith("W/"):
        # The compressed bytes differ from the file's: a strong validator
        # would promise ranges of them. Weak, it still answers If-None-Match.
        headers["ETag"] = "W/" + validator
    return response
