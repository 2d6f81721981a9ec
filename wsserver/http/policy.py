"""Who may talk to a server on a desktop: the ``Origin`` and ``Host`` rules.

A local server is reachable from every web page its user opens. Two holes
follow, and both are closed here by default (sans-I/O: pure decisions on
header values, tested without sockets):

* **Cross-site WebSocket hijacking.** WebSocket is not bound by the
  same-origin policy: any page may open ``ws://127.0.0.1:PORT/``. Browsers
  always send the page's ``Origin`` with an upgrade, and a page cannot
  forge it, so an upgrade from a browser is accepted only from the server's
  own origin (the scheme it serves and the host and port of the request's
  ``Host``) or one the application lists. An upgrade without ``Origin``
  comes from a program, not a browser, and stays allowed: ``Origin``
  protects browser users from foreign pages; it authenticates nobody.
* **DNS rebinding.** A foreign name can be made to resolve to 127.0.0.1, and
  the page at that name then reaches the server as a same-origin page. Its
  requests carry the foreign name in ``Host``, so the ``Host`` must be a
  name the server knows: ``localhost`` (and ``*.localhost``, which browsers
  resolve to loopback), an IP address (which nobody can rebind; on a
  loopback bind, only a loopback address), or one the application lists.
  This is webpack-dev-server's ``allowedHosts: "auto"`` rule, and close to
  Jupyter's and Django's (``ALLOWED_HOSTS``) defaults.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

__all__ = ["ANY", "origin_allowed", "host_allowed", "split_host"]

#: The spelling that allows any origin or any host (for servers that really are public).
ANY = "*"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a ``Host`` header (lowercased, brackets and a
    trailing dot removed; port None when absent), or None if it is malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in " /\\@?#"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = value.partition(":")
        if ":" in port_text:
            return None  # an IPv6 literal needs brackets
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        return None
    host = host.rstrip(".")
    return (host, int(port_text) if port_text else None) if host else None


def origin_allowed(origin: str | None, host: str | None, scheme: str, allowed: str | Collection[str | None] | None) -> bool:
    """Whether an upgrade with this ``Origin`` may proceed.

    :param origin: the ``Origin`` header, or None when there is none (a
        program, not a browser: allowed).
    :param host: the request's ``Host`` header.
    :param scheme: what the server serves, ``"http"`` or ``"https"``.
    :param allowed: :data:`ANY` for any origin; otherwise origins allowed
        besides the server's own (``"null"`` must be listed to allow pages
        with an opaque origin: sandboxed frames, ``file:`` pages).
    """
    if origin is None or allowed == ANY:
        return True
    if allowed and origin in allowed:
        return True
    if origin == "null" or host is None:
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme != scheme or not parts.hostname or parts.path or parts.query or parts.fragment:
        return False
    own = split_host(host)
    if own is None:
        return False
    own_host, own_port = own
    default = _DEFAULT_PORTS[scheme]
    return parts.hostname.rstrip(".") == own_host and (origin_port or default) == (own_port or default)


def host_allowed(host: str | None, bound: str, allowed: str | Collection[str] | None) -> bool:
    """Whether a request with this ``Host`` header may be served.

    :param host: the ``Host`` header; None when there is none (HTTP/1.0
        from a program: no browser, so no rebinding; allowed).
    :param bound: the address the server listens on.
    :param allowed: :data:`ANY` for any host; otherwise host names allowed
        besides the defaults; a name starting with a dot allows its
        subdomains too (``".example.lan"``).
    """
    if host is None or allowed == ANY:
        return True
    parsed = split_host(host)
    if parsed is None:
        return False
    name = parsed[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    loopback = _loopback_address(name)
    if loopback is not None:
        return loopback or not _loopback_address(bound)
    for entry in allowed or ():
        entry = entry.lower()
        if name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


@functools.lru_cache(maxsize=256)
def _loopback_address(name: str) -> bool | None:
    """Whether ``name`` is a loopback address; None if it is not an IP
    address. (Cached: the same few Host names come with every request.)"""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return None
