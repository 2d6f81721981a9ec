"""Static files from a document root: path confinement, validators,
conditional and range requests, and bodies streamed in slices.

Nothing here blocks on the network: a file is opened and ``fstat``-ed when
the request is answered, and its bytes are read one slice at a time as the
connection can take them (:class:`FileBody`).
"""

from __future__ import annotations

import email.utils
import html
import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from .request import HttpError, Request
from .response import Response, error_response, http_date

__all__ = ["FileBody", "resolve", "open_file", "file_response", "directory_listing", "content_type", "CHUNK_SIZE"]

#: Bytes read from a file per body chunk: one reactor write slice, so one
#: chunk is one unit of work of a poll step.
CHUNK_SIZE = 256 * 1024

# Types outside text/* that are text, and get the charset parameter too.
_TEXT_TYPES = {"application/javascript", "application/json", "application/xml", "image/svg+xml", "application/manifest+json"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_fadvise = getattr(os, "posix_fadvise", None)
_READ_AHEAD = 4 * CHUNK_SIZE
# Open flags: no blocking on a FIFO that sits in the root; binary on Windows.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def resolve(root: Path, url_path: str) -> Path:
    """The file system path that ``url_path`` (percent-decoded) names under ``root``.

    Raises :class:`HttpError` 403 for a path that tries to leave the root
    (``..`` segments, backslashes, NUL bytes, drive letters, symlinks that
    point outside) and 404 for hidden names (a segment starting with ``.``)
    and for paths that do not exist.
    """
    segments = [s for s in url_path.split("/") if s not in ("", ".")]
    if any(s == ".." or "\\" in s or "\0" in s or ":" in s for s in segments):
        raise HttpError(403, "path not allowed")
    if any(s.startswith(".") for s in segments):
        raise HttpError(404, "not found")
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, *segments))
    # realpath() follows every symlink, so this also catches links that leave the root.
    if os.path.commonpath([real_root, target]) != real_root:
        raise HttpError(403, "path leaves the document root")
    if not os.path.exists(target):
        raise HttpError(404, "not found")
    return Path(target)


class FileBody:
    """A response body that reads ``length`` bytes of an open file from
    ``offset``, one :data:`CHUNK_SIZE` slice per chunk. The connection
    closes it when the answer ends or is abandoned."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._file = open(fd, "rb", buffering=0)  # noqa: SIM115  (closed by close(), when the answer ends)
        self._file.seek(offset)
        self._remaining = length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._remaining <= 0:
            self.close()
            raise StopIteration
        chunk = self._file.read(min(CHUNK_SIZE, self._remaining))
        if not chunk:
            self.close()
            raise OSError("the file shrank while it was being sent")
        self._remaining -= len(chunk)
        if _fadvise is not None and self._remaining > 0:
            # Ask the kernel to start reading the next slices now, so the
            # next read finds them in memory instead of waiting for the disk.
            try:
                _fadvise(self._file.fileno(), self._file.tell(), min(_READ_AHEAD, self._remaining), os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # only a hint; some file systems refuse it
        return chunk

    def close(self) -> None:
        self._file.close()


def open_file(path: Path) -> tuple[int, os.stat_result]:
    """Open a regular file for reading; its descriptor and status.

    Raises :class:`HttpError` 404 for anything but a regular file (a FIFO
    or a device must never be read on the GUI thread) and 403 when the
    file cannot be read.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except PermissionError:
        raise HttpError(403, "file not readable") from None
    except OSError:
        raise HttpError(404, "not found") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HttpError(404, "not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # O_NONBLOCK was only for the open()
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def content_type(path: Path) -> str:
    """The ``Content-Type`` for a file name, with ``charset=utf-8`` for text."""
    guessed, encoding = mimetypes.guess_type(path.name)
    if guessed is None or encoding is not None:
        # Unknown, or a compressed file (.gz) that must not be labelled as
        # what it decompresses to.
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in _TEXT_TYPES:
        return f"{guessed}; charset=utf-8"
    return guessed


def entity_tag(st: os.stat_result) -> str:
    """A strong validator from the modification time and size (as nginx does)."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def file_response(request: Request, path: Path, cache_control: str | None) -> Response:
    """The answer to a ``GET`` or ``HEAD`` of the regular file at ``path``:
    200, 206 (a single byte range), 304 (not modified), 412
    (precondition failed) or 416 (range not satisfiable)."""
    fd, st = open_file(path)
    try:
        etag = entity_tag(st)
        mtime = int(st.st_mtime)
        validators = [("ETag", etag), ("Last-Modified", http_date(mtime))]
        if cache_control:
            validators.append(("Cache-Control", cache_control))
        status = _precondition_status(request, etag, mtime)
        if status == 304:
            os.close(fd)
            # The 200's size, which RFC 9110 section 8.6 allows here: it
            # tells gzip_response() whether the 200 would be compressed.
            return Response(b"", 304, [*validators, ("Content-Length", str(st.st_size))])
        if status == 412:
            os.close(fd)
            return error_response(412)
        size = st.st_size
        headers = [("Content-Type", content_type(path)), ("Accept-Ranges", "bytes"), *validators]
        try:
            byte_range = _requested_range(request, etag, mtime, size)
        except _Unsatisfiable:
            os.close(fd)
            return error_response(416, headers=[("Content-Range", f"bytes */{size}")])
        if byte_range is None:
            start, length, status = 0, size, 200
        else:
            start, end = byte_range
            length, status = end - start + 1, 206
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        return Response(FileBody(fd, start, length), status, headers)
    except BaseException:
        # FileBody owns the descriptor once made; until then it is ours.
        try:
            os.close(fd)
        except OSError:
            pass
        raise


def _precondition_status(request: Request, etag: str, mtime: int) -> int | None:
    """304 or 412 from the conditional headers (RFC 9110 section 13.2.2), or None."""
    headers = request.headers
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _tag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = _parse_date(headers.get("If-Unmodified-Since"))
        if since is not None and mtime > since:
            return 412
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        return 304 if _tag_matches(if_none_match, etag, weak=True) else None
    since = _parse_date(headers.get("If-Modified-Since"))
    if since is not None and mtime <= since:
        return 304
    return None


class _Unsatisfiable(Exception):
    """The ``Range`` asked for no byte the file has (416)."""


def _requested_range(request: Request, etag: str, mtime: int, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single ``Range`` that applies, or None to
    send the whole file; raises :class:`_Unsatisfiable` for a range past the end.

    Only ``GET`` has ranges; a malformed or multi-range header is ignored
    (the whole file is sent, which RFC 9110 section 14.2 allows), and so is
    a ``Range`` whose ``If-Range`` validator no longer matches.
    """
    value = request.headers.get("Range")
    if value is None or request.method != "GET":
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None:
        if if_range.startswith(('"', "W/")):
            if if_range != etag:  # strong comparison: a weak tag never matches
                return None
        elif _parse_date(if_range) != mtime:
            return None
    match = _RANGE.fullmatch(value.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise _Unsatisfiable
    return start, size - 1 if last == "" else min(int(last), size - 1)


def _tag_matches(header: str, etag: str, weak: bool) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if weak:
            candidate = candidate.removeprefix("W/")
        elif candidate.startswith("W/"):
            continue
        if candidate == etag:
            return True
    return False


def _parse_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def directory_listing(request: Request, directory: Path) -> Response:
    """A plain HTML list of a directory's visible entries."""
    title = html.escape(request.path)
    items = ['<li><a href="../">../</a></li>'] if request.path != "/" else []
    with os.scandir(directory) as entries:
        names = sorted((e.name + ("/" if e.is_dir() else "")) for e in entries if not e.name.startswith("."))
    items += [f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>' for name in names]
    page = f'<!doctype html>\n<meta charset="utf-8">\n<title>{title}</title>\n<h1>{title}</h1>\n<ul>\n' + "\n".join(items) + "\n</ul>\n"
    return Response(page, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})
