"""HTTP/1.1 on the WebSocket port: request parsing, responses, routes,
static files, streamed uploads, cookies and signed sessions, and
Server-Sent Events."""

from .cookies import Cookie
from .forms import FormData
from .headers import Headers
from .request import HttpError, Request, RequestParser
from .response import Response, redirect
from .server import HttpServer
from .sessions import Session, Sessions
from .sse import EventStream
from .uploads import Part, UploadedFile

__all__ = [
    "Cookie",
    "FormData",
    "Headers",
    "HttpError",
    "Request",
    "RequestParser",
    "Response",
    "redirect",
    "HttpServer",
    "Session",
    "Sessions",
    "EventStream",
    "Part",
    "UploadedFile",
]
