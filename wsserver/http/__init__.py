"""HTTP/1.1 on the WebSocket port: request parsing, responses, routes."""

from .headers import Headers
from .request import HttpError, Request, RequestParser
from .response import Response
from .server import HttpServer

__all__ = ["Headers", "HttpError", "Request", "RequestParser", "Response", "HttpServer"]
