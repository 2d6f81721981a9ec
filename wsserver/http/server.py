"""The HTTP server that shares the WebSocket port: routes, static files,
error pages, and the answers to them.

:class:`HttpServer` turns a parsed :class:`~wsserver.http.request.Request`
into a :class:`~wsserver.http.response.Response`. It does no socket I/O;
the connection driver in :mod:`wsserver.drivers.http` reads requests and writes
the answers (streaming file and event-stream bodies as the socket drains).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from . import static, uploads
from .compression import GzipCache, accepts_gzip, gzip_response
from .request import HttpError, Request
from .response import Response, error_response
from .routing import PathPattern
from .sessions import Sessions
from .sse import EventStream
from .uploads import BodyReceiver, SinkFactory

if TYPE_CHECKING:
    from ..context import ServerContext

__all__ = ["HttpServer", "Handler", "HandlerResult", "ErrorPage", "to_response"]

#: What a route handler may return: text, bytes, JSON-able dict/list, a
#: Response, an EventStream, or None (204).
HandlerResult = Union[str, bytes, dict[Any, Any], list[Any], Response, EventStream, None]  # noqa: UP007  (a runtime alias: kept a typing.Union)
#: A route handler: it takes the request, and a route with parameters
#: passes each as a keyword argument.
Handler = Callable[..., HandlerResult]
#: A custom error page: a file under the root, or ``(request, status) -> result``
#: (``request`` is None for errors outside routing: a bad request, a timeout, a refused upgrade).
ErrorPage = Union[str, Callable[[Union[Request, None], int], HandlerResult]]  # noqa: UP007  (a runtime alias: kept a typing.Union)

#: Methods this server knows; any other gets 501 Not Implemented.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
_READ_ONLY = ("GET", "HEAD")
# Custom error page files are read whole; anything bigger is not an error page.
_MAX_ERROR_PAGE = 1024 * 1024


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    handler: Handler
    #: False (the body is buffered), True (streamed to temporary files) or a sink factory.
    stream: bool | SinkFactory
    #: The route's body size limit, or None for the server's.
    max_body_size: int | None


class HttpServer:
    """Routes and static files, served on the WebSocket server's port.

    Routes are tried first, then files under :attr:`root`.

    :ivar root: the document root (a directory), or None to serve routes only.
    :ivar index: the file served for a directory (``index.html``).
    :ivar directory_listing: list a directory that has no index file
        (off by default: 403).
    :ivar cache_control: the ``Cache-Control`` of static files; the default
        ``"no-cache"`` makes browsers revalidate (cheaply, with ``ETag``).
    :ivar fallback: for single-page apps, the file under the root served
        for a ``GET`` of a path that does not exist and has no file
        extension (``"index.html"``), or None.
    :ivar error_pages: custom answers by status: a file path under the
        root, or a function ``(request, status)`` returning what a route
        handler returns.
    :ivar websocket_paths: the paths where a WebSocket upgrade is accepted,
        or None for every path (others get 404).
    :ivar upload_dir: where streamed uploads are written while they arrive
        (None: the system's temporary directory).
    :ivar gzip: compress text answers for clients that accept gzip (on by
        default; see :mod:`wsserver.http.compression`). A static file with a
        pre-compressed sibling (``app.js.gz``) is served from it.
    :ivar sessions: signed session cookies (a :class:`~wsserver.http.sessions.Sessions`),
        or None (the default) for none: ``request.session`` in routes and
        in ``on_upgrade_to_websocket``.
    :ivar guard: called with every request's head before a route or a file
        answers it (not upgrades: ``on_upgrade_to_websocket`` decides those);
        what it returns, if not None, is the answer instead, as a route
        handler's would be (a 403 for a device that is not paired, say:
        :meth:`~wsserver.http.pairing.Pairing.guard`). It runs before a
        body is read.
    """

    def __init__(self, context: ServerContext, root: str | os.PathLike[str] | None = None) -> None:
        self._context = context
        self._routes: dict[str, _Route] = {}
        # Routes with parameters, tried in the order they were registered.
        self._patterns: list[tuple[PathPattern, _Route]] = []
        self.root = root
        self.index = "index.html"
        self.directory_listing = False
        self.cache_control: str | None = "no-cache"
        self.fallback: str | None = None
        self.error_pages: dict[int, ErrorPage] = {}
        self.websocket_paths: Collection[str] | None = None
        self.upload_dir: str | None = None
        self.sessions: Sessions | None = None
        self.guard: Callable[[Request], HandlerResult] | None = None
        self.gzip = True
        self._gzip_cache = GzipCache()

    @property
    def root(self) -> Path | None:
        return self._root

    @root.setter
    def root(self, value: str | os.PathLike[str] | None) -> None:
        self._root = None if value is None else Path(value)
        if value is not None and not mimetypes.inited:
            mimetypes.init()  # reads the system's type tables now, not during a request

    def route(
        self,
        path: str,
        methods: Iterable[str] = ("GET",),
        handler: Handler | None = None,
        *,
        stream: bool | SinkFactory = False,
        max_body_size: int | None = None,
    ) -> Any:
        """Register ``handler`` for ``path``; without ``handler``, a decorator.

        ``path`` is exact, or has parameters: ``/files/{name}`` (one path
        segment), ``/items/{id:int}`` (digits, passed as an ``int``),
        ``/docs/{rest:path}`` (the rest of the path). Each reaches the
        handler as a keyword argument (``request.path_params`` has them
        too). Exact paths win over patterns, and patterns are tried in the
        order they were registered.

        A handler takes the :class:`Request` and returns ``str`` (HTML if it
        starts with ``<``, else plain text), ``bytes``, a ``dict``/``list``
        (JSON), a :class:`Response`, an :class:`EventStream`, or None (204).
        One that raises gives 500 and the exception goes to ``on_error``.
        ``GET`` routes answer ``HEAD`` too.

        By default the body is received whole before the handler runs, up
        to ``max_body_size`` (the server's when None; 413 beyond). With
        ``stream=True`` it is received as it arrives, a slice at a time
        within the poll budget, and never whole in memory: the files of a
        ``multipart/form-data`` body go to temporary files, in
        ``request.files`` (:class:`~wsserver.http.uploads.UploadedFile`),
        its text fields to ``request.form()``; any other body goes to one
        file, ``request.body_file``. The handler runs once the body is
        whole, and the temporary files are deleted when it returns unless it
        keeps them with ``UploadedFile.save()``. ``stream`` may instead be a function
        ``(request, part) -> sink`` that opens where each file's bytes go
        (see :class:`~wsserver.http.uploads.Sink`). A streamed route's
        ``max_body_size`` defaults to
        :data:`~wsserver.http.uploads.MAX_UPLOAD_SIZE` (4 GiB). Multipart
        needs ``python-multipart`` (``pip install wsserver[multipart]``).
        """
        allowed = frozenset(m.upper() for m in methods)
        if "GET" in allowed:
            allowed |= {"HEAD"}
        if stream is not False:
            uploads.require_multipart()
        pattern = PathPattern(path) if PathPattern.has_parameters(path) else None

        def register(fn: Handler) -> Handler:
            entry = _Route(allowed, fn, stream, max_body_size)
            if pattern is None:
                self._routes[path] = entry
            else:
                self._patterns = [(p, r) for p, r in self._patterns if p.path != path]
                self._patterns.append((pattern, entry))
            return fn

        return register(handler) if handler is not None else register

    def accepts_websocket(self, path: str) -> bool:
        """Whether a WebSocket upgrade may happen on ``path``."""
        return self.websocket_paths is None or path in self.websocket_paths

    def open_session(self, request: Request) -> None:
        """Give ``request`` its session (from its cookie), when sessions are on."""
        if self.sessions is not None:
            request.session = self.sessions.load(request)

    def handle(self, request: Request) -> Response:
        """The answer to ``request``; it never raises. A session the
        handler changed is sent back as a cookie."""
        try:
            response = self._dispatch(request)
            if self.sessions is not None and request.session.modified:
                response.cookies.append(self.sessions.cookie(request.session))
            return response
        except HttpError as exc:
            return self.error_response(exc.status, exc.message, request=request)
        except Exception as exc:
            self._context.report_error(None, exc)
            return self.error_response(500, request=request)

    def error_response(
        self,
        status: int,
        message: str = "",
        headers: Iterable[tuple[str, str]] = (),
        request: Request | None = None,
    ) -> Response:
        """The answer for an error ``status``: the custom page from
        :attr:`error_pages` if there is one, else a short text."""
        headers = list(headers)
        page = self.error_pages.get(status)
        if page is not None:
            try:
                response = self._error_page(page, request, status)
            except Exception as exc:
                self._context.report_error(None, exc)
            else:
                for name, value in headers:
                    response.headers[name] = value
                return response
        return error_response(status, message, headers)

    @property
    def scheme(self) -> str:
        """``"https"`` when the server speaks TLS, else ``"http"``: the scheme of its own origin."""
        return "https" if self._context.secure else "http"

    def get_url(self, path: str = "", use_lan_ip: bool = False) -> str | None:
        """The ``http://`` URL of ``path`` on this server, or None if it is not started."""
        return self._context.url("http", path, use_lan_ip)

    # -- internals -------------------------------------------------------

    def refusal(self, request: Request) -> Response | None:
        """The answer to ``request`` when it is known from the head alone:
        501 for an unknown method, 405 for a method the route does not
        take, 404 with neither a route nor a root; None when a handler or
        the static files will serve it; or the :attr:`guard`'s answer.
        ``Expect: 100-continue`` is answered with it before the body is sent."""
        if request.method not in KNOWN_METHODS:
            return self.error_response(501, f"method {request.method} not implemented", request=request)
        if self.guard is not None:
            try:
                answer = self.guard(request)
                if answer is not None:
                    return to_response(answer)
            except Exception as exc:  # application code, also run outside handle()
                self._context.report_error(None, exc)
                return self.error_response(500, request=request)
        route = self._find_route(request)
        if route is not None:
            if request.method not in route.methods:
                return self.error_response(405, headers=[("Allow", ", ".join(sorted(route.methods)))], request=request)
            return None
        if self._root is None:
            return self.error_response(404, request=request)
        return None

    def _dispatch(self, request: Request) -> Response:
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        route = self._find_route(request)
        if route is not None:
            response = to_response(route.handler(request, **request.path_params))  # an exception becomes a 500 in handle()
            return gzip_response(request, response, self._gzip_cache) if self.gzip else response
        return self._serve_static(request)

    def body_plan(self, request: Request) -> tuple[int, bool]:
        """Decided once ``request``'s head is in: the largest body it may
        have, and whether the body is streamed (to a route registered with
        ``stream``) rather than buffered."""
        route = self._handling_route(request)
        if route is None:
            return self._context.server.max_body_size, False
        streamed = route.stream is not False
        if route.max_body_size is not None:
            return route.max_body_size, streamed
        return (uploads.MAX_UPLOAD_SIZE if streamed else self._context.server.max_body_size), streamed

    def body_receiver(self, request: Request) -> BodyReceiver | None:
        """Where the body of ``request`` goes as it arrives, when its route
        streams it (None when it is buffered). Raises :class:`HttpError`
        for a body it refuses from the head (a multipart type without a
        boundary)."""
        route = self._handling_route(request)
        if route is None or route.stream is False:
            return None
        sink_factory = None if route.stream is True else route.stream
        return uploads.body_receiver(request, sink_factory, self.upload_dir)

    def _handling_route(self, request: Request) -> _Route | None:
        """The route that will run for ``request``: its path's, if it takes the method."""
        route = self._find_route(request)
        return route if route is not None and request.method in route.methods else None

    def _find_route(self, request: Request) -> _Route | None:
        """The route of ``request.path`` (setting ``request.path_params``), or None."""
        route = self._routes.get(request.path)
        if route is not None or not self._patterns:
            return route
        for pattern, entry in self._patterns:
            params = pattern.match(request.path)
            if params is not None:
                request.path_params = params
                return entry
        return None

    def _serve_static(self, request: Request) -> Response:
        root = self._root
        assert root is not None
        try:
            path = static.resolve(root, request.path)
        except HttpError as exc:
            if exc.status != 404 or not self._falls_back(request):
                raise
            path = static.resolve(root, self.fallback or "")
        if request.method not in _READ_ONLY:
            return self.error_response(405, headers=[("Allow", "GET, HEAD")], request=request)
        if path.is_dir():
            if not request.path.endswith("/"):
                # Relative links in the index resolve against the directory only with the slash.
                location = request.raw_path + "/" + ("?" + request.query_string if request.query_string else "")
                return Response(f"301 Moved Permanently\n{location}\n", 301, {"Location": location})
            index = path / self.index
            if index.is_file():
                path = index
            elif self.directory_listing:
                return static.directory_listing(request, path)
            else:
                return self.error_response(403, "directory listing is off", request=request)
        if not self.gzip:
            return static.file_response(request, path, self.cache_control)
        if "Range" not in request.headers and accepts_gzip(request):
            precompressed = path.with_name(path.name + ".gz")
            if precompressed.is_file():
                response = static.file_response(request, precompressed, self.cache_control)
                response.headers["Content-Type"] = static.content_type(path)
                response.headers["Content-Encoding"] = "gzip"
                response.headers["Vary"] = "Accept-Encoding"
                return response
        return gzip_response(request, static.file_response(request, path, self.cache_control), self._gzip_cache, str(path))

    def _falls_back(self, request: Request) -> bool:
        last = request.path.rsplit("/", 1)[-1]
        return bool(self.fallback) and request.method in _READ_ONLY and "." not in last

    def _error_page(self, page: ErrorPage, request: Request | None, status: int) -> Response:
        if callable(page):
            result = page(request, status)
            if isinstance(result, Response):
                return result
            response = to_response(result)
            response.status = status
            return response
        if self._root is None:
            raise LookupError(f"error page {page!r} needs a document root")
        path = static.resolve(self._root, page)
        fd, _ = static.open_file(path)
        with open(fd, "rb") as file:
            body = file.read(_MAX_ERROR_PAGE)
        return Response(body, status, content_type=static.content_type(path))


def to_response(result: HandlerResult) -> Response:
    """Turn what a handler returned into a :class:`Response`."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(b"", 204)
    if isinstance(result, EventStream):
        return Response(result, headers=EventStream.headers)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    if isinstance(result, str):
        return Response(result, content_type="text/html; charset=utf-8" if result.lstrip().startswith("<") else None)
    return Response(bytes(result), content_type="application/octet-stream")
