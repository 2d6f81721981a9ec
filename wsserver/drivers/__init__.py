"""The drivers of one TCP connection: :class:`HttpDriver` from accept to
the last response or the upgrade, then :class:`WebSocketDriver`.

They move bytes between a :class:`~wsserver.reactor.Stream` and the
sans-I/O protocol layers, hold the connection's timers, and reach the server
only through its :class:`~wsserver.context.ServerContext`.
"""

from .http import HttpDriver
from .websocket import WebSocketDriver

__all__ = ["HttpDriver", "WebSocketDriver"]
