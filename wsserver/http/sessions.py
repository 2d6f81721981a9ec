"""Signed session cookies: a small dict of JSON values that the browser
keeps and sends back, signed with HMAC-SHA256 so that it cannot be forged
or altered.

Turn them on with ``server.http_server.sessions = Sessions()``. Every
request then has ``request.session``: in route handlers, where a change is
sent back as a cookie with the answer, and in ``on_upgrade_to_websocket``,
where it tells whether the page that opens the WebSocket is logged in. That,
beside ``origins``, is how to authenticate WebSocket clients: a foreign page
cannot read the cookie (``HttpOnly``), and its WebSocket carries it only if
``origins`` lets that page connect at all.

The data is signed, not encrypted: the user can read it (base64 JSON). Keep
secrets out of it; store an id and keep the rest on the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from .cookies import Cookie

if TYPE_CHECKING:
    from .request import Request

__all__ = ["Session", "Sessions"]

# Browsers keep cookies up to 4096 bytes, name and attributes included.
_MAX_VALUE = 3800


class Session(dict[str, Any]):
    """The session's values (JSON-able). Changing it has the answer set
    the cookie again; clearing it has the answer delete the cookie."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        super().__init__(values or {})
        #: Whether it changed since it came with the request.
        self.modified = False

    def _touch(self, result: Any) -> Any:
        self.modified = True
        return result

    def __setitem__(self, key: str, value: Any) -> None:
        self._touch(super().__setitem__(key, value))

    def __delitem__(self, key: str) -> None:
        self._touch(super().__delitem__(key))

    def clear(self) -> None:
        self._touch(super().clear())

    def pop(self, key: str, *default: Any) -> Any:
        return self._touch(super().pop(key, *default))

    def popitem(self) -> tuple[str, Any]:
        return self._touch(super().popitem())  # type: ignore[no-any-return]

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self._touch(super().setdefault(key, default))

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._touch(super().update(*args, **kwargs))


class Sessions:
    """Signs and checks session cookies.

    :param key: the HMAC key (at least 16 bytes). None makes a random one
        for this run: sessions then end when the program does. Give a
        stored key to keep them across restarts.
    :param cookie_name: the cookie's name.
    :param max_age: seconds a session lasts after it was last set; the
        browser forgets the cookie then, and a copy older than that is
        refused.
    :param path: the cookie's path.
    """

    def __init__(self, key: bytes | None = None, cookie_name: str = "wsserver_session", max_age: int = 14 * 24 * 3600, path: str = "/") -> None:
        if key is not None and len(key) < 16:
            raise ValueError("a session key has at least 16 bytes (secrets.token_bytes(32) makes one)")
        self._key = key if key is not None else secrets.token_bytes(32)
        Cookie(cookie_name)  # the name is checked once, here
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.path = path

    def load(self, request: Request) -> Session:
        """The session of ``request``: the values of its cookie if the
        signature holds and it is not too old, else an empty session."""
        value = request.cookies.get(self.cookie_name)
        values = self._verify(value) if value else None
        return Session(values)

    def cookie(self, session: Session) -> Cookie:
        """The cookie that stores ``session`` (one that deletes it, when empty).
        Raises ``ValueError`` when the values are not JSON or too big for a cookie."""
        if not session:
            return Cookie(self.cookie_name, "", max_age=0, path=self.path)
        payload = _b64(json.dumps(session, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        signed = f"{payload}.{int(time.time()):x}"
        value = f"{signed}.{self._sign(signed)}"
        if len(value) > _MAX_VALUE:
            raise ValueError(f"the session is {len(value)} bytes as a cookie, over {_MAX_VALUE}: keep an id in it, the data on the server")
        return Cookie(self.cookie_name, value, max_age=self.max_age, path=self.path)

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode("ascii"), hashlib.sha256).digest())

    def _verify(self, value: str) -> dict[str, Any] | None:
        signed, _, signature = value.rpartition(".")
        if not hmac.compare_digest(self._sign(signed).encode(), signature.encode("ascii", "replace")):
            return None
        payload, _, stamp = signed.partition(".")
        try:
            issued = int(stamp, 16)
            values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None  # signed by us, so never; but a key shared with other code might
        # A minute of slack for a clock set back while the program ran.
        if not -60 <= time.time() - issued <= self.max_age or not isinstance(values, dict):
            return None
        return values


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
