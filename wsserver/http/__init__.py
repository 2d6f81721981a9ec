"""HTTP/1.1 on the WebSocket port: request parsing, responses, routes,
static files, streamed uploads and Server-Sent Events."""

from .forms import FormData
from .headers import Headers
from .request import HttpError, Request, RequestParser
from .response import Response, redirect
from .server import HttpServer
from .sse import EventStream
from .uploads import Part, UploadedFile

__all__ = [
    "FormData",
    "Headers",
    "HttpError",
    "Request",
    "RequestParser",
    "Response",
    "redirect",
    "HttpServer",
    "EventStream",
    "Part",
    "UploadedFile",
]
