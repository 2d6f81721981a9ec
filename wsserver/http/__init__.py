"""HTTP/1.1 on the WebSocket port: request parsing, responses, routes,
static files and Server-Sent Events."""

from .headers import Headers
from .request import HttpError, Request, RequestParser
from .response import Response
from .server import HttpServer
from .sse import EventStream

__all__ = ["Headers", "HttpError", "Request", "RequestParser", "Response", "HttpServer", "EventStream"]
