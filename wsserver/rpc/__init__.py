"""JSON-RPC 2.0 over the WebSocket: the desktop program exposes functions
that its pages call, and calls functions the pages expose.

    rpc = wsserver.rpc.JsonRpc(server, {"files": {"list": list_files}})

    @rpc.method("settings.get")
    def get_setting(name, *, client):      # client: the caller
        return settings[name]

    rpc.survey("page.title", on_result=lambda client, title: print(client.id, title))

The page loads ``/wsserver-rpc.js`` from the server (``await
WsRpc.connect()``, then ``await rpc.call("files.list", "/tmp")``); see
:class:`JsonRpc` for who may call, which messages are taken, the limits,
and deferred results.
"""

from .deferred import Deferred
from .protocol import (
    CALL_TIMED_OUT,
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    TOO_MANY_PENDING,
    RpcError,
)
from .service import CLIENT_SCRIPT_PATH, CLIENT_TYPES_PATH, DEFAULT_CALL_TIMEOUT, JsonRpc

__all__ = [
    "JsonRpc",
    "Deferred",
    "RpcError",
    "CLIENT_SCRIPT_PATH",
    "CLIENT_TYPES_PATH",
    "DEFAULT_CALL_TIMEOUT",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "CALL_TIMED_OUT",
    "CONNECTION_CLOSED",
    "TOO_MANY_PENDING",
]
