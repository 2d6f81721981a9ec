"""``python -m wsserver``: an echo (or broadcast) WebSocket server with its page.

    python -m wsserver                 # echo on 127.0.0.1:8765, chat page at /
    python -m wsserver --broadcast     # relay every message to every client
    python -m wsserver --root site/    # serve the files of site/ instead
    python -m wsserver --host 0.0.0.0  # reachable from the LAN (by IP address)
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
from .protocol import DEFAULT_COMPRESSION
from .tls import server_context

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
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for the LAN)")
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    if args.root is not None and not Path(args.root).is_dir():
        print(f"--root {args.root}: not a directory", file=sys.stderr)
        return 2
    ssl_context = None
    if args.certfile is not None:
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
    try:
        server.start(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"WebSocket: {server.get_url()}", flush=True)
    print(f"Page:      {server.http_server.get_url()}", flush=True)
    if args.host in ("0.0.0.0", "::", ""):
        # What a phone on the LAN opens: names need --allow-host (DNS rebinding).
        print(f"On the LAN: {server.http_server.get_url(use_lan_ip=True)}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.call_soon_threadsafe(server.stop))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


def _any_or(values: list[str] | None) -> Any:
    """A repeated option's values, or "*" if one of them is."""
    return "*" if values and "*" in values else values


if __name__ == "__main__":
    sys.exit(main())
