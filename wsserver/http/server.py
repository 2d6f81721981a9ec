"""The HTTP server that shares the WebSocket port: routes and their answers.

:class:`HttpServer` turns a parsed :class:`~wsserver.http.request.Request`
into a :class:`~wsserver.http.response.Response`. It does no socket I/O;
the connection driver in :mod:`wsserver.server` reads requests and writes
the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Union

from .request import Request
from .response import Response, error_response

if TYPE_CHECKING:
    from ..server import Server

__all__ = ["HttpServer", "Handler", "HandlerResult"]

#: What a route handler may return: text, bytes, JSON-able dict/list, or a Response.
HandlerResult = Union[str, bytes, dict, list, Response, None]
Handler = Callable[[Request], HandlerResult]


class HttpServer:
    """Routes by path, served on the WebSocket server's port.

    Register handlers with :meth:`route`; a handler takes the request and
    returns ``str`` (text/plain), ``bytes``, a ``dict``/``list`` (JSON), a
    :class:`Response`, or None (204). A handler that raises gives 500 and the
    exception goes to the server's ``on_error``.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._routes: dict[str, tuple[frozenset[str], Handler]] = {}

    def route(
        self,
        path: str,
        methods: Iterable[str] = ("GET",),
        handler: Handler | None = None,
    ) -> Any:
        """Register ``handler`` for ``path``; without ``handler``, a decorator.

        ``GET`` routes answer ``HEAD`` too.
        """
        allowed = frozenset(m.upper() for m in methods)
        if "GET" in allowed:
            allowed |= {"HEAD"}

        def register(fn: Handler) -> Handler:
            self._routes[path] = (allowed, fn)
            return fn

        return register(handler) if handler is not None else register

    def handle(self, request: Request) -> Response:
        """The answer to ``request``."""
        route = self._routes.get(request.path)
        if route is None:
            return error_response(404)
        allowed, handler = route
        if request.method not in allowed:
            return error_response(405, headers=[("Allow", ", ".join(sorted(allowed)))])
        try:
            result = handler(request)
        except Exception as exc:
            self._server._report_error(None, exc)
            return error_response(500)
        return to_response(result)

    def get_url(self, path: str = "", use_lan_ip: bool = False) -> str | None:
        """The ``http://`` URL of ``path`` on this server, or None if it is not started."""
        return self._server._url("http", path, use_lan_ip)


def to_response(result: HandlerResult) -> Response:
    """Turn what a handler returned into a :class:`Response`."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(b"", 204)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    if isinstance(result, str):
        return Response(result, content_type="text/html; charset=utf-8" if result.lstrip().startswith("<") else None)
    return Response(bytes(result), content_type="application/octet-stream")
