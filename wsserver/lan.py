"""Reaching the program from a phone on the LAN: the address to bind, the
addresses devices reach, and the QR code a phone's camera opens.

QR codes need the ``lan`` extra (``pip install 'wsserver[lan]'``, which
brings segno, a pure-Python QR library); everything else is standard
library. Tk and Qt draw :func:`qr_matrix` themselves (the demos do);
:func:`qr_text` is for a terminal.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["lan_addresses", "lan_bind_address", "route_address", "qr_matrix", "qr_text"]


def lan_bind_address() -> str:
    """The address to bind to serve the LAN: ``::`` where the platform has
    dual-stack sockets (one socket takes IPv4 and IPv6 devices), else
    ``0.0.0.0``."""
    return "::" if socket.has_dualstack_ipv6() else "0.0.0.0"


def route_address(family: int) -> str | None:
    """This machine's address on its default route for ``family``
    (``AF_INET`` or ``AF_INET6``), or None without one. Connecting a UDP
    socket sends no packet: it only asks the kernel which interface it would use."""
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect((probe, 9))
            return str(udp.getsockname()[0])
    except OSError:
        return None


def lan_addresses() -> list[str]:
    """This machine's addresses that other devices on the LAN can reach:
    the ones on the default routes first, then the others the host name
    resolves to; no loopback, link-local or wildcard address."""
    found = [routed for family in (socket.AF_INET, socket.AF_INET6) if (routed := route_address(family)) is not None]
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    found.extend(str(info[4][0]) for info in infos)
    addresses: list[str] = []
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not (address.is_loopback or address.is_link_local or address.is_unspecified) and str(address) not in addresses:
            addresses.append(str(address))
    return addresses


def qr_matrix(text: str) -> list[list[bool]]:
    """The modules of a QR code for ``text`` (True: dark), with the quiet
    zone of four modules around it that a reader needs. Needs segno."""
    try:
        import segno
    except ImportError:
        raise ImportError("QR codes need segno: pip install 'wsserver[lan]'") from None
    code = segno.make(text, error="m", boost_error=False)
    return [[bool(module) for module in row] for row in code.matrix_iter(border=4)]


def qr_text(text: str) -> str:
    """The QR code for ``text`` drawn with block characters, two rows of
    modules per line, for a terminal with a dark background: light modules
    are blocks, dark ones the background."""
    matrix = qr_matrix(text)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    glyphs = {(False, False): "\u2588", (True, False): "\u2584", (False, True): "\u2580", (True, True): " "}
    return "\n".join("".join(glyphs[top, bottom] for top, bottom in zip(upper, lower)) for upper, lower in zip(matrix[::2], matrix[1::2]))
