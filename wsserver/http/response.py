"""HTTP responses: the :class:`Response` type that route handlers return,
and the serialisation of a response head."""

from __future__ import annotations

import email.utils
import http
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Union

from .headers import Headers

if TYPE_CHECKING:
    from .cookies import Cookie

__all__ = ["Response", "Body", "redirect", "reason_phrase", "render_head", "error_response", "SERVER_NAME"]

SERVER_NAME = "wsserver"

#: A response body: bytes sent as they are, or an iterable of byte chunks
#: pulled one at a time while the connection can take more (an
#: :class:`~wsserver.http.sse.EventStream` yields None while it has nothing
#: to send, and restarts the pull itself when it has).
Body = Union[bytes, Iterable[Optional[bytes]]]  # noqa: UP007, UP045  (a runtime alias: kept a typing.Union)


def reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Response:
    """What an HTTP handler answers.

    ``body`` is ``bytes`` or an iterable of ``bytes`` chunks (streamed with
    chunked transfer coding unless ``Content-Length`` is set). ``str`` bodies
    are encoded as UTF-8 and, with no ``content_type``, sent as
    ``text/plain``; :meth:`json` builds a JSON answer.
    """

    __slots__ = ("status", "headers", "body", "cookies")

    def __init__(
        self,
        body: str | Body = b"",
        status: int = 200,
        headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers = Headers(headers.items() if isinstance(headers, dict) else (headers or ()))
        if isinstance(body, str):
            body = body.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        self.body: Body = body
        if content_type and "Content-Type" not in self.headers:
            self.headers["Content-Type"] = content_type
        #: The cookies to set, rendered with the head (``Secure`` known then).
        self.cookies: list[Cookie] = []

    def set_cookie(
        self,
        name: str,
        value: str = "",
        *,
        max_age: int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: str | None = "Lax",
    ) -> None:
        """Set a cookie on the client. The defaults are the safe ones:
        ``HttpOnly`` (page scripts cannot read it), ``SameSite=Lax`` (other
        sites' requests do not carry it, but for top-level navigation), and
        ``Secure`` when the server speaks TLS (``secure=None``). ``max_age``
        in seconds; None makes a cookie that ends with the browser's
        session. Raises ``ValueError`` for a name or value a cookie cannot
        carry (see :class:`~wsserver.http.cookies.Cookie`)."""
        from .cookies import Cookie

        self.cookies.append(Cookie(name, value, max_age, path, domain, secure, httponly, samesite))

    def delete_cookie(self, name: str, *, path: str | None = "/", domain: str | None = None) -> None:
        """Have the client forget cookie ``name`` (set with this ``path`` and ``domain``)."""
        self.set_cookie(name, max_age=0, path=path, domain=domain)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Iterable[tuple[str, str]] | None = None) -> Response:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(data, status, headers, content_type="application/json")

    def __repr__(self) -> str:
        return f"<Response {self.status} {reason_phrase(self.status)}>"


def error_response(status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A short plain-text error answer: the status line, then ``message`` if given."""
    text = f"{status} {reason_phrase(status)}\n"
    if message:
        text += message + "\n"
    return Response(text, status, list(headers))


def render_head(status: int, headers: Iterable[tuple[str, str]], version: str = "HTTP/1.1") -> bytes:
    """The status line and header lines of a response, ending with the empty line."""
    lines = [f"{version} {status} {reason_phrase(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def http_date(timestamp: float | None = None) -> str:
    """An IMF-fixdate, as the ``Date`` and ``Last-Modified`` headers want it."""
    return email.utils.formatdate(timestamp, usegmt=True)


#: The statuses :func:`redirect` sends.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def redirect(url: str, status: int = 302) -> Response:
    """An answer that sends the client to ``url`` (its ``Location``).

    302 (the default) and 303 make the client fetch ``url`` with GET (303
    is the one to answer a form's POST with); 307 and 308 repeat the same
    method and body there; 301 and 308 say the move is permanent (browsers
    remember it). Raises ``ValueError`` for another status, or a URL with
    CR, LF or NUL, which would split the header.
    """
    if status not in REDIRECT_STATUSES:
        raise ValueError(f"a redirect's status is one of {sorted(REDIRECT_STATUSES)}, not {status}")
    if any(c in url for c in "\r\n\0"):
        raise ValueError("a redirect URL may not contain CR, LF or NUL")
    return Response(b"", status, headers=[("Location", url)])
