"""Streamed request bodies: ``multipart/form-data`` uploads parsed as they
arrive, files written to temporary files (or to the application's own
sinks) and never held whole in memory.

A route registered with ``stream=True`` gets its body through a
:class:`BodyReceiver` that the connection driver feeds a slice at a time,
within the poll budget. When the body is whole, the handler runs with
``request.files`` (and ``request.form()`` for the text fields); temporary
files are deleted once it returns, unless it kept them with
:meth:`UploadedFile.save`.

The multipart framing is parsed by ``python-multipart``, an optional
dependency (``pip install wsserver[multipart]``): the core stays
dependency-free, and only programs that take uploads need it. Our own
callbacks bound parts per body, headers per part and the size of text
fields, so the limits are ours, documented here, and answered with 413.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .errors import HttpError
from .forms import FormData, MultiValueDict, media_type
from .headers import Headers

if TYPE_CHECKING:
    from .request import Request

__all__ = [
    "BodyReceiver",
    "Files",
    "Part",
    "Sink",
    "SinkFactory",
    "UploadedFile",
    "MAX_UPLOAD_SIZE",
    "body_receiver",
    "delete_in_slices",
    "require_multipart",
    "safe_filename",
]

#: The default size limit of a streamed body (413 beyond): a route sets its own with ``max_body_size``.
MAX_UPLOAD_SIZE = 4 * 1024**3
#: Most parts in one multipart body, files and fields together (413 beyond).
MAX_PARTS = 1000
#: Most header lines in one part, and most bytes of them (413 beyond).
MAX_PART_HEADERS = 16
MAX_PART_HEADER_BYTES = 16 * 1024
#: Largest text field (a part without a filename), and all of them together, held in memory (413 beyond).
MAX_FIELD_SIZE = 1024 * 1024
MAX_FIELDS_SIZE = 8 * 1024 * 1024

# python-multipart (0.0.27 and later) bounds a part's headers too, with
# lower bounds than ours that it answers as a parse error. Its bounds are
# lifted so that ours decide (413): it holds no header bytes itself, and
# hands them to our callbacks within each write, one slice at most.
_LIBRARY_LIMITS = {"max_header_count": 2**31, "max_header_size": 2**31}

#: Bytes of a temporary file freed in the first step of its deletion; the
#: next cuts adapt to the time each took (see :func:`delete_in_slices`).
DELETE_SLICE = 8 * 1024 * 1024
DELETE_SLICE_MIN = 1024 * 1024
DELETE_SLICE_MAX = 64 * 1024 * 1024
#: What one cut may take: a slower one halves the next, one under a quarter of it doubles it.
DELETE_STEP_TIME = 0.001

_INSTALL_HINT = "streamed multipart uploads need python-multipart: pip install wsserver[multipart]"


def require_multipart() -> None:
    """Raise ImportError, saying what to install, when python-multipart is missing."""
    try:
        import python_multipart  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc


class Sink(Protocol):
    """Where one uploaded part's bytes go: an open binary file, or any
    object with ``write`` and ``close`` (called when the part ends). If it
    also has ``discard()``, that is called when the upload fails (after
    ``close()``): the handler will not run, so what was written is of no use."""

    def write(self, data: bytes, /) -> Any: ...

    def close(self) -> Any: ...


@dataclass(frozen=True)
class Part:
    """The head of one uploaded part, as a :data:`SinkFactory` sees it.

    For a streamed body that is not multipart, the whole body is one part
    with an empty ``name`` and the request's ``Content-Type``."""

    #: The form field's name (``name`` of ``Content-Disposition``).
    name: str
    #: The file's base name, made safe by :func:`safe_filename` ("" when the client gave none).
    filename: str
    content_type: str
    headers: Headers


#: Opens the sink of a part: called with the request and the part's head,
#: before any of its data.
SinkFactory = Callable[["Request", Part], Sink]


@dataclass
class UploadedFile:
    """A file received whole. ``path`` is its temporary file (None when it
    went to the application's own sink, then in ``sink``). The temporary
    file is deleted when the handler returns: :meth:`save` keeps it."""

    name: str
    filename: str
    content_type: str
    headers: Headers
    size: int = 0
    path: Path | None = None
    sink: Sink | None = field(default=None, repr=False)

    def open(self) -> IO[bytes]:
        """The received bytes, as a file open for reading."""
        if self.path is None:
            raise ValueError("this upload went to the application's sink, not to a file")
        return open(self.path, "rb")

    def save(self, destination: str | os.PathLike[str]) -> Path:
        """Move the file to ``destination`` (a file path, or a directory
        to put it in under :attr:`filename`) and return where it is now.
        The file is moved, not copied, when both are on one file system."""
        if self.path is None:
            raise ValueError("this upload went to the application's sink, not to a file")
        target = Path(destination)
        if target.is_dir():
            if not self.filename:
                raise ValueError("the client gave no file name: save to a file path")
            target = target / self.filename
        shutil.move(self.path, target)
        self.path = target
        return target


class Files(MultiValueDict[UploadedFile]):
    """The uploaded files of a request by field name, in the order they
    came: ``files[name]`` is the last of a name, :meth:`get_all` gives each."""

    __slots__ = ()


def safe_filename(name: str) -> str:
    """The base name of a client's file name, safe to join to a directory:
    whatever precedes the last ``/`` or ``\\`` is dropped (``../../x`` and
    ``C:\\x`` become ``x``), control characters are removed, and "", ``.``
    and ``..`` become "". Still, never trust it as a whole path: join it to
    a directory of your choosing."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    if base.endswith(":"):  # a bare drive name (C:)
        base = ""
    return "" if base in (".", "..") else base.lstrip(":")


def delete_in_slices(path: Path, clock: Callable[[], float] = time.perf_counter) -> Iterator[None]:
    """Delete a file a step at a time: one cut from its end per step, then
    the unlink. Freeing a big file's blocks and cached pages at once takes
    about 60 ms per GiB (ext4, here), and what a cut costs depends on the
    disk and on how much of the file is still dirty in the page cache (an
    8 MiB cut took from 0.3 to 2 ms in bench/upload.py), so each cut is
    sized from the time the last one took, to stay near
    :data:`DELETE_STEP_TIME`. A file already gone (moved by
    :meth:`UploadedFile.save`) ends it."""
    cut = DELETE_SLICE
    try:
        size = os.stat(path).st_size
        while size > cut:
            size -= cut
            start = clock()
            os.truncate(path, size)
            took = clock() - start
            if took > DELETE_STEP_TIME:
                cut = max(DELETE_SLICE_MIN, cut // 2)
            elif took < DELETE_STEP_TIME / 4:
                cut = min(DELETE_SLICE_MAX, cut * 2)
            yield
        os.unlink(path)
    except FileNotFoundError:
        return


class BodyReceiver:
    """Takes a streamed body a slice at a time (sans socket I/O: the
    driver feeds it). :meth:`finish` when the body is complete, or
    :meth:`abort` when it will not be; :meth:`release` once the handler is
    done, or failed: it hands back the temporary files to delete, which
    the caller deletes with :func:`delete_in_slices`. :meth:`feed` and
    :meth:`finish` raise :class:`HttpError` for a body to refuse; an
    exception from a sink propagates as it is."""

    def __init__(self, request: Request, open_sink: SinkFactory | None, directory: str | None) -> None:
        self.request = request
        self._open_sink = open_sink
        self._directory = directory
        self._files: list[UploadedFile] = []
        self._temporary: list[Path] = []  # handed back by release(), to delete
        self._sink: Sink | None = None  # of the part being received

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The body will not be complete: close the open sink and
        ``discard()`` every application sink that has it. The temporary
        files are still to be deleted (:meth:`release` names them)."""
        self._end_part()
        for upload in self._files:
            discard = getattr(upload.sink, "discard", None)
            if callable(discard):
                discard()

    def release(self) -> list[Path]:
        """The temporary files to delete, once the handler is done (those
        it did not :meth:`~UploadedFile.save` are still there) or the
        upload failed."""
        paths, self._temporary = self._temporary, []
        return paths

    # -- parts -----------------------------------------------------------

    def _begin_file(self, part: Part) -> UploadedFile:
        upload = UploadedFile(part.name, part.filename, part.content_type, part.headers)
        self._files.append(upload)  # before the sink opens: abort() finds it if that fails half-way
        if self._open_sink is not None:
            upload.sink = self._sink = self._open_sink(self.request, part)
        else:
            fd, path = tempfile.mkstemp(prefix="wsserver-upload-", dir=self._directory)
            upload.path = Path(path)
            self._temporary.append(upload.path)
            self._sink = open(fd, "wb")  # noqa: SIM115  (closed when the part ends, or by abort())
        return upload

    def _write(self, upload: UploadedFile, data: bytes) -> None:
        """Append ``data`` to the file being received."""
        assert self._sink is not None
        self._sink.write(data)
        upload.size += len(data)

    def _end_part(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()


class RawBodyReceiver(BodyReceiver):
    """A body that is not multipart, whole into one file: ``request.body_file``."""

    def __init__(self, request: Request, open_sink: SinkFactory | None, directory: str | None) -> None:
        super().__init__(request, open_sink, directory)
        content_type = request.headers.get("Content-Type") or "application/octet-stream"
        self._upload = self._begin_file(Part("", "", content_type, request.headers))
        request.body_file = self._upload

    def feed(self, data: bytes) -> None:
        self._write(self._upload, data)

    def finish(self) -> None:
        self._end_part()


class MultipartReceiver(BodyReceiver):
    """A ``multipart/form-data`` body (RFC 7578): files into sinks, text
    fields into ``request.form()``, each bounded."""

    def __init__(self, request: Request, boundary: bytes, open_sink: SinkFactory | None, directory: str | None) -> None:
        super().__init__(request, open_sink, directory)
        from python_multipart.multipart import MultipartParser

        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            **_LIBRARY_LIMITS,
        )
        self._fields: list[tuple[str, str]] = []
        self._fields_size = 0
        self._parts = 0
        self._ended = False
        # The part being received: its header lines so far, and where its data goes.
        self._header_lines: list[tuple[bytearray, bytearray]] = []
        self._header_bytes = 0
        self._upload: UploadedFile | None = None
        self._field: tuple[str, bytearray] | None = None
        request.files = Files([])

    def feed(self, data: bytes) -> None:
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise HttpError(400, f"malformed multipart body: {exc}") from None

    def finish(self) -> None:
        if not self._ended:
            raise HttpError(400, "the multipart body ends before its closing boundary")
        self.request.files = Files([(upload.name, upload) for upload in self._files])
        self.request.set_form(FormData(self._fields))

    # -- python-multipart's callbacks --------------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise HttpError(413, f"more than {MAX_PARTS} parts in the multipart body")
        self._header_lines = []
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        if not self._header_lines or self._header_lines[-1][1]:
            if len(self._header_lines) >= MAX_PART_HEADERS:
                raise HttpError(413, f"more than {MAX_PART_HEADERS} headers in a part")
            self._header_lines.append((bytearray(), bytearray()))
        self._header_lines[-1][0].extend(data[start:end])
        self._count_header_bytes(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_lines[-1][1].extend(data[start:end])
        self._count_header_bytes(end - start)

    def _on_header_end(self) -> None:
        if self._header_lines and not self._header_lines[-1][1]:
            self._header_lines[-1][1].extend(b" ")  # an empty value still ends its line

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise HttpError(413, f"a part's headers are over {MAX_PART_HEADER_BYTES} bytes")

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        headers = Headers()
        for field_name, value in self._header_lines:
            headers.add(field_name.decode("latin-1").strip(), value.decode("latin-1").strip())
        disposition, params = parse_options_header(headers.get("Content-Disposition") or "")
        if disposition != b"form-data" or b"name" not in params:
            raise HttpError(400, "a part without Content-Disposition: form-data and a name")
        name = _text(params[b"name"], "a part's name")
        if b"filename" not in params:
            self._field = (name, bytearray())
            return
        filename = safe_filename(_text(params[b"filename"], "a file name"))
        content_type = headers.get("Content-Type") or "application/octet-stream"
        self._upload = self._begin_file(Part(name, filename, content_type, headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._upload is not None:
            self._write(self._upload, data[start:end])
            return
        assert self._field is not None
        value = self._field[1]
        size = end - start
        if len(value) + size > MAX_FIELD_SIZE:
            raise HttpError(413, f"form field {self._field[0]!r} is over {MAX_FIELD_SIZE} bytes")
        self._fields_size += size
        if self._fields_size > MAX_FIELDS_SIZE:
            raise HttpError(413, f"the form's text fields are over {MAX_FIELDS_SIZE} bytes together")
        value.extend(data[start:end])

    def _on_part_end(self) -> None:
        if self._upload is not None:
            self._end_part()
            self._upload = None
        elif self._field is not None:
            name, value = self._field
            self._fields.append((name, _text(bytes(value), f"form field {name!r}")))
            self._field = None

    def _on_end(self) -> None:
        self._ended = True


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"{what} is not UTF-8") from None


def body_receiver(request: Request, open_sink: SinkFactory | None = None, directory: str | None = None) -> BodyReceiver:
    """The receiver of ``request``'s streamed body: multipart for
    ``multipart/form-data``, one file for any other content type. Raises
    :class:`HttpError` 400 for a multipart body without a usable boundary."""
    content_type = request.headers.get("Content-Type")
    if media_type(content_type) != "multipart/form-data":
        return RawBodyReceiver(request, open_sink, directory)
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary", b"")
    # RFC 2046 section 5.1.1: 1 to 70 characters, not ending with a space.
    if not 0 < len(boundary) <= 70 or boundary.endswith(b" "):
        raise HttpError(400, "multipart/form-data without a valid boundary")
    return MultipartReceiver(request, boundary, open_sink, directory)
