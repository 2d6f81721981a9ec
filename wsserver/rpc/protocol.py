"""JSON-RPC 2.0 messages (https://www.jsonrpc.org/specification), sans-I/O.

:func:`parse` turns one WebSocket text message into the items it carries
(calls, notifications, answers to our own calls, and invalid entries with
the error they get), or says it is not JSON-RPC at all; the ``*_message``
functions build the objects to send and :func:`encode` makes them text.
Nothing here runs a method or touches a socket.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "CALL_TIMED_OUT",
    "CONNECTION_CLOSED",
    "TOO_MANY_PENDING",
    "RpcError",
    "Call",
    "Answer",
    "Invalid",
    "Parsed",
    "parse",
    "encode",
    "result_message",
    "error_message",
    "call_message",
]

# The specification's codes (section 5.1).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Ours, in the range the specification leaves to implementations
# (-32000 to -32099); the JavaScript client uses the same ones.
#: A call into the other side got no answer within its timeout.
CALL_TIMED_OUT = -32000
#: The connection ended before the call was answered.
CONNECTION_CLOSED = -32001
#: A client already has as many calls waiting for deferred results as the server allows.
TOO_MANY_PENDING = -32002

_MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    CALL_TIMED_OUT: "Call timed out",
    CONNECTION_CLOSED: "Connection closed",
    TOO_MANY_PENDING: "Too many calls pending",
}

#: An ``id``: a string, a number or null (section 4; a bool is not a number).
Id = str | int | float | None
Params = list[Any] | dict[str, Any] | None


class RpcError(Exception):
    """A JSON-RPC error: raise it in a method to answer with ``code``,
    ``message`` and ``data`` (any JSON value; left out when None); the
    error a call into a page ends with is one too.

    Codes from -32768 to -32000 are the specification's and this
    library's; an application's own codes should lie outside them.
    """

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"a JSON-RPC error code is an integer, not {code!r}")
        self.code = code
        self.message = message if message is not None else _MESSAGES.get(code, "Server error")
        self.data = data
        super().__init__(code, self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" + ("" if self.data is None else f": {self.data!r}")

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @classmethod
    def from_json(cls, error: Any) -> RpcError:
        """The error of an answer from the other side; one that does not
        have the specification's shape is itself an internal error."""
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            if isinstance(code, int) and not isinstance(code, bool) and isinstance(message, str):
                return cls(code, message, error.get("data"))
        return cls(INTERNAL_ERROR, "Malformed error object", error)


@dataclass(frozen=True, slots=True)
class Call:
    """A request (``notification`` False: it is answered) or a notification."""

    method: str
    params: Params
    id: Id
    notification: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """The other side's answer to one of our calls: ``result``, or ``error``."""

    id: Id
    result: Any
    error: RpcError | None


@dataclass(frozen=True, slots=True)
class Invalid:
    """An entry that is not a valid request: it is answered with ``error``."""

    id: Id
    error: RpcError


Item = Call | Answer | Invalid


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one text message carried: its items, and whether it was a batch
    (whose answers then go back as one array)."""

    items: list[Item]
    batch: bool


def parse(text: str, *, exclusive: bool, max_depth: int, max_batch: int) -> Parsed | None:
    """The JSON-RPC items in ``text``, or None when it is not JSON-RPC.

    With ``exclusive``, every text is JSON-RPC, as the specification reads:
    text that is not JSON is a parse error, other JSON an invalid request.
    Without it, only a JSON object with a ``"jsonrpc"`` member, or an array
    whose first element is one, is JSON-RPC; anything else (plain text, an
    application's own JSON) is not, and the caller leaves it alone.

    JSON nested deeper than ``max_depth`` and a batch longer than
    ``max_batch`` are refused whole with an invalid-request error.
    """
    if not exclusive and '"jsonrpc"' not in text:
        return None  # cannot be one: spares parsing an application's messages
    too_deep = Parsed([Invalid(None, RpcError(INVALID_REQUEST, data=f"JSON nested deeper than {max_depth} levels"))], False)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return too_deep  # deeper than the decoder's own stack allows
    except ValueError:
        return Parsed([Invalid(None, RpcError(PARSE_ERROR))], False) if exclusive else None
    if not exclusive and not _looks_like_rpc(value):
        return None
    if _deeper_than(value, max_depth):
        return too_deep
    if not isinstance(value, list):
        return Parsed([_item(value)], False)
    if not value:
        return Parsed([Invalid(None, RpcError(INVALID_REQUEST, data="an empty batch"))], False)
    if len(value) > max_batch:
        return Parsed([Invalid(None, RpcError(INVALID_REQUEST, data=f"a batch of {len(value)} entries; the limit is {max_batch}"))], False)
    return Parsed([_item(entry) for entry in value], True)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity, which json.loads accepts by default


def _looks_like_rpc(value: Any) -> bool:
    if isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict) and "jsonrpc" in value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` deep (without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _item(entry: Any) -> Item:
    """One request, notification or answer, checked against section 4."""
    if not isinstance(entry, dict):
        return Invalid(None, RpcError(INVALID_REQUEST))
    has_id = "id" in entry
    ident = entry.get("id")
    if not _valid_id(ident):
        return Invalid(None, RpcError(INVALID_REQUEST))
    if entry.get("jsonrpc") != "2.0":
        return Invalid(ident, RpcError(INVALID_REQUEST))
    if "method" not in entry and ("result" in entry) != ("error" in entry) and has_id:
        if "error" in entry:
            return Answer(ident, None, RpcError.from_json(entry["error"]))
        return Answer(ident, entry["result"], None)
    method, params = entry.get("method"), entry.get("params")
    if not isinstance(method, str) or not (params is None or isinstance(params, (list, dict))) or ("params" in entry and params is None):
        return Invalid(ident, RpcError(INVALID_REQUEST))
    return Call(method, params, ident, not has_id)


def encode(message: Any) -> str:
    """Compact JSON text; raises ValueError or TypeError for a value that
    JSON cannot carry (NaN, a set, an object)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def result_message(ident: Id, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": ident}


def error_message(ident: Id, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": ident}


def call_message(method: str, params: Params, ident: Id = None, notification: bool = False) -> dict[str, Any]:
    """A request (with ``ident``) or, with ``notification``, a notification."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        message["params"] = params
    if not notification:
        message["id"] = ident
    return message
