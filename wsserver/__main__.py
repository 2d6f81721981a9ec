"""``python -m wsserver``: an echo (or broadcast) WebSocket server with its page.

    python -m wsserver                 # echo on 127.0.0.1:8765, chat page at /
    python -m wsserver --broadcast     # relay every message to every client
    python -m wsserver --root site/    # serve the files of site/ instead
    python -m wsserver --host 0.0.0.0  # reachable from the LAN (by IP address)
    python -m wsserver --lan           # the LAN, paired devices only: a one-time link and its QR code
    python -m wsserver --lan --tls     # the same over https/wss, with a self-signed certificate
    python -m wsserver --host 0.0.0.0 --allow-host mypc.lan --allow-origin http://mypc.lan:3000
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from . import Client, Message, Server
from .http.pairing import PairedDevice, Pairing
from .lan import lan_addresses, lan_bind_address, qr_text
from .protocol import DEFAULT_COMPRESSION
from .tls import self_signed_context, server_context

#: The built-in chat/echo page, served when no ``--root`` is given.
BUILTIN_ROOT = Path(__file__).with_name("static")


def build_server(
    broadcast: bool,
    root: str | Path = BUILTIN_ROOT,
    allowed_hosts: list[str] | None = None,
    origins: list[str] | None = None,
    compression: bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> Server:
    server = Server(
        root=root,
        allowed_hosts=allowed_hosts,
        origins=origins,
        compression=DEFAULT_COMPRESSION if compression else None,
        ssl_context=ssl_context,
    )
    log = logging.getLogger("wsserver.demo")

    def on_open(client: Client) -> None:
        log.info("%r connected (%d clients)", client, server.client_count())

    def on_message(client: Client, message: Message) -> None:
        if broadcast:
            server.publish(message.data)
        else:
            client.send(message.data)

    def on_client_closed(client: Client) -> None:
        log.info("%r left with %s (%d clients)", client, client.close_code, server.client_count())

    server.on_open = on_open
    server.on_message = on_message
    server.on_client_closed = on_client_closed
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsserver", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; with --lan, :: dual-stack where the platform has it, else 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--broadcast", action="store_true", help="relay every message to all clients instead of echoing")
    parser.add_argument("--root", metavar="DIR", help="serve the files of DIR over HTTP (default: the built-in chat page)")
    parser.add_argument(
        "--allow-host", action="append", metavar="NAME", dest="allowed_hosts",
        help="also serve requests for this host name (localhost and IP addresses always are); '*' for any; repeatable",
    )
    parser.add_argument(
        "--allow-origin", action="append", metavar="ORIGIN", dest="origins",
        help="also let pages of this origin open a WebSocket (the server's own page always may); '*' for any; repeatable",
    )
    parser.add_argument("--no-compression", action="store_true", help="decline permessage-deflate (negotiated by default)")
    parser.add_argument("--certfile", metavar="FILE", help="serve wss:// and https:// with this certificate (PEM, chain first)")
    parser.add_argument("--keyfile", metavar="FILE", help="the certificate's private key (default: in --certfile)")
    parser.add_argument(
        "--lan", action="store_true",
        help="for phones on the LAN: bind every interface, print a one-time pairing link and its QR code, and let in only paired devices and this machine",
    )
    parser.add_argument("--tls", action="store_true", help="with --lan: https and wss with a new self-signed certificate for the LAN addresses")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    if args.root is not None and not Path(args.root).is_dir():
        print(f"--root {args.root}: not a directory", file=sys.stderr)
        return 2
    host = args.host if args.host is not None else lan_bind_address() if args.lan else "127.0.0.1"
    ssl_context = None
    if args.tls:
        if not args.lan or args.certfile is not None:
            print("--tls goes with --lan (a certificate of your own: --certfile)", file=sys.stderr)
            return 2
        try:
            ssl_context = self_signed_context([*lan_addresses(), "localhost", "127.0.0.1"])
        except ImportError:
            print("--tls needs the cryptography package: pip install 'wsserver[tls]'", file=sys.stderr)
            return 2
    elif args.certfile is not None:
        try:
            ssl_context = server_context(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            print(f"cannot load the certificate: {exc}", file=sys.stderr)
            return 2
    elif args.keyfile is not None:
        print("--keyfile needs --certfile", file=sys.stderr)
        return 2
    server = build_server(
        args.broadcast,
        args.root if args.root is not None else BUILTIN_ROOT,
        allowed_hosts=_any_or(args.allowed_hosts),
        origins=_any_or(args.origins),
        compression=not args.no_compression,
        ssl_context=ssl_context,
    )
    pairing = pair_devices(server) if args.lan else None
    try:
        server.start(host, args.port)
    except OSError as exc:
        print(f"cannot listen on {host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"WebSocket: {server.get_url()}", flush=True)
    print(f"Page:      {server.http_server.get_url()}", flush=True)
    if host in ("0.0.0.0", "::", ""):
        # What a phone on the LAN opens: names need --allow-host (DNS rebinding).
        print(f"On the LAN: {server.http_server.get_url(use_lan_ip=True)}", flush=True)
    if args.tls:
        print("Phones warn about the self-signed certificate; a local CA (mkcert) avoids it, see the README.", flush=True)
    if pairing is not None:
        pairing.show_link()
    signal.signal(signal.SIGTERM, lambda *_: server.call_soon_threadsafe(server.stop))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


class _LanPairing(Pairing):
    """Pairing for the command line: each link printed with its QR code,
    and a new one once a device has used it."""

    def show_link(self) -> None:
        link = self.new_link(self.http.get_url(use_lan_ip=True) or "")
        print(f"Pair a device (the link works once, for {self.ttl / 60:g} minutes): {link}", flush=True)
        try:
            print(qr_text(link), flush=True)
        except ImportError:
            print("(pip install 'wsserver[lan]' to show it as a QR code)", flush=True)


def pair_devices(server: Server) -> _LanPairing:
    """Let in only paired devices and this machine: pages and files (the
    HTTP guard) and WebSockets (the upgrade hook)."""
    pairing = _LanPairing(server.http_server)

    def paired(device: PairedDevice) -> None:
        print(f"Paired {device.address} ({device.name or 'unnamed'})", flush=True)
        pairing.show_link()

    pairing.on_paired = paired
    server.http_server.guard = pairing.guard
    server.on_upgrade_to_websocket = pairing.admit
    return pairing


def _any_or(values: list[str] | None) -> Any:
    """A repeated option's values, or "*" if one of them is."""
    return "*" if values and "*" in values else values


if __name__ == "__main__":
    sys.exit(main())
