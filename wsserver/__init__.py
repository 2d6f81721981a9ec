"""wsserver: a WebSocket + HTTP server that lives inside a GUI event loop.

Create a :class:`Server`, set its callbacks, ``start()`` it, and pump it with
``poll()`` from the GUI loop (or let an adapter from :mod:`wsserver.adapters`
do that, or call ``serve_forever()``). No asyncio, and no work off the
polling thread: on Windows an adapter's helper thread only waits in
``select()`` and says when a socket is ready (:mod:`wsserver.waker`).
"""

from .http.request import Request
from .http.response import Response, redirect
from .http.sse import EventStream
from .protocol import CloseCode, Compression, Fragment, Message, Opcode, ProtocolError
from .protocol.handshake import accept_key as get_sec_accept
from .protocol.handshake import generate_key as get_sec_key
from .protocol.handshake import sha1_base64
from .resume import ResumePolicy
from .server import Client, Server, UpgradeResponse

__version__ = "0.2.0"

__all__ = [
    "Server",
    "Client",
    "Message",
    "Fragment",
    "Request",
    "Response",
    "redirect",
    "EventStream",
    "UpgradeResponse",
    "ResumePolicy",
    "CloseCode",
    "Compression",
    "Opcode",
    "ProtocolError",
    "get_sec_accept",
    "get_sec_key",
    "sha1_base64",
]
