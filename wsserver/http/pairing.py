"""Pairing a phone (or any device on the LAN) with the program in one step.

The program shows a link, usually as a QR code (:func:`wsserver.lan.qr_matrix`):
``http://192.168.1.20:8765/pair/<token>``. The first visit exchanges the
one-time token for a signed session cookie naming a new paired device, and
redirects to a clean ``/``; the token then stops working, and it expires
unused after ``ttl`` seconds. ``http_server.guard = pairing.guard`` keeps
every page and file from devices that are not paired (this machine's own
browser excepted), and ``on_upgrade_to_websocket = pairing.admit`` does
the same for WebSockets (:meth:`Pairing.allows` and :meth:`Pairing.device`
answer the question for a hook of the application's own);
:meth:`Pairing.revoke` unpairs a device.

A link is refused when the request that brings it comes from another site
(a foreign page that learnt a token cannot pair its visitor), and the
cookie is the session's: ``HttpOnly``, ``SameSite=Lax``, ``Secure`` under
TLS. The token is the secret: anyone who sees the QR code may pair, once.

Host and origin need no configuration: a LAN address is an IP address,
which the server's ``Host`` rule always admits (nobody can rebind one), and
the page it serves there is the server's own origin.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .policy import origin_allowed
from .response import Response, redirect
from .sessions import Sessions

if TYPE_CHECKING:
    from ..client import Client, UpgradeResponse
    from .request import Request
    from .server import HttpServer

__all__ = ["Pairing", "PairedDevice", "PAIR_PATH"]

#: The route that exchanges a token: ``/pair/<token>``.
PAIR_PATH = "/pair/{token}"
_PAIR_PREFIX = PAIR_PATH.partition("{")[0]
_SESSION_KEY = "wsserver.device"


@dataclass
class PairedDevice:
    """A device that used a pairing link."""

    id: str
    #: Its ``User-Agent`` when it paired (for a list the user reads).
    name: str
    address: str
    since: float = field(default_factory=time.time)


class Pairing:
    """One-time pairing links and the devices that used them.

    ``Pairing(server.http_server)`` registers the ``/pair/<token>`` route,
    and turns signed sessions on if the application has not. ``ttl`` is how
    long a link may wait to be used; ``on_paired(device)`` runs when one is.
    Devices are kept in memory, for the life of the program.
    """

    def __init__(self, http: HttpServer, ttl: float = 300.0, on_paired: Callable[[PairedDevice], Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if http.sessions is None:
            http.sessions = Sessions()
        self.http = http
        self.ttl = ttl
        self.on_paired = on_paired
        self._clock = clock
        self._tokens: dict[str, float] = {}  # token -> when it expires
        self._devices: dict[str, PairedDevice] = {}
        self._numbers = itertools.count(1)
        http.route(PAIR_PATH, handler=self._pair)

    def new_link(self, base_url: str) -> str:
        """A new one-time link under ``base_url`` (the server's URL as the
        device will reach it, such as ``http_server.get_url(use_lan_ip=True)``)."""
        now = self._clock()
        for token, expires in list(self._tokens.items()):
            if expires <= now:
                del self._tokens[token]
        token = secrets.token_urlsafe(18)
        self._tokens[token] = now + self.ttl
        return base_url.rstrip("/") + _PAIR_PREFIX + token

    @property
    def devices(self) -> list[PairedDevice]:
        return list(self._devices.values())

    def revoke(self, device_id: str) -> bool:
        """Unpair a device: its cookie is worth nothing from now on. (Its
        open WebSockets stay open; close them too.) False if unknown."""
        return self._devices.pop(device_id, None) is not None

    def device(self, request: Request) -> PairedDevice | None:
        """The paired device that sent ``request``, or None."""
        if self.http.sessions is None:
            return None
        device_id = request.session.get(_SESSION_KEY)
        return self._devices.get(device_id) if isinstance(device_id, str) else None

    def allows(self, request: Request, address: tuple[Any, ...] | None = None) -> bool:
        """Whether ``request`` comes from a paired device, or from this
        machine (a loopback ``address``: the desktop's own browser)."""
        host = (address or request.client_address or ("",))[0]
        return _loopback(str(host)) or self.device(request) is not None

    def guard(self, request: Request) -> Response | None:
        """For ``http_server.guard``: 403 for a request from neither a
        paired device nor this machine, except to use a pairing link."""
        token = request.path[len(_PAIR_PREFIX) :] if request.path.startswith(_PAIR_PREFIX) else None
        if (token and "/" not in token) or self.allows(request):
            return None  # a pairing link (one segment: the route takes it, never a file), or a trusted device
        return Response("This device is not paired: open the link or scan the QR code that the program shows.\n", 403)

    def admit(self, client: Client, request: Request, response: UpgradeResponse, *_: Any) -> None:
        """For ``on_upgrade_to_websocket`` (or called from one): refuse with
        403 the WebSocket of a device that :meth:`allows` does not."""
        if not self.allows(request, client.remote_address):
            response.error_status(403, "this device is not paired")

    def _pair(self, request: Request, token: str) -> Response:
        if _from_another_site(request, self.http.scheme):
            return Response("A pairing link works only when it is opened, not from another site.\n", 403)
        expires = self._tokens.pop(token, None)
        if expires is None or expires <= self._clock():
            return Response("This pairing link was used already or has expired: ask the program for a new one.\n", 403)
        address = request.client_address or ("",)
        device = PairedDevice(f"device-{next(self._numbers)}-{secrets.token_hex(4)}", request.headers.get("User-Agent", "")[:200], str(address[0]))
        self._devices[device.id] = device
        request.session[_SESSION_KEY] = device.id
        if self.on_paired is not None:
            self.on_paired(device)
        return redirect("/", 303)


def _from_another_site(request: Request, scheme: str) -> bool:
    """Whether a browser says the request was made by a page of another
    site: ``Sec-Fetch-Site`` (an opened link or a scanned code says
    ``none``), or an ``Origin`` that is not the server's own (the rule
    WebSocket upgrades are checked by, with nothing else allowed)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("none", "same-origin"):
        return True
    return not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), scheme, None)


def _loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
