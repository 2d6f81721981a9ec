"""The WebSocket protocol without I/O: bytes in, events out; events in, bytes out.

Nothing in this package touches a socket, a clock or application code.
"""

from .connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BufferPool,
    Connection,
    Data,
    InvalidState,
    PreparedMessage,
    State,
    as_bytes,
    check_frame,
    prepare_message,
)
from .deflate import DEFAULT_COMPRESSION, Agreement, Compression, PerMessageDeflate, negotiate
from .events import CloseReceived, Event, Failure, Fragment, Message, Ping, Pong
from .frames import (
    CloseCode,
    InvalidText,
    MessageTooBig,
    Opcode,
    ProtocolError,
    apply_mask,
    encode_frame,
    is_valid_close_code,
    parse_header,
)
from .handshake import HandshakeError, UpgradeRequest, accept_key, generate_key, parse_upgrade, sha1_base64

__all__ = [
    "Connection",
    "BufferPool",
    "State",
    "InvalidState",
    "PreparedMessage",
    "prepare_message",
    "as_bytes",
    "Compression",
    "DEFAULT_COMPRESSION",
    "Agreement",
    "PerMessageDeflate",
    "negotiate",
    "check_frame",
    "Data",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Event",
    "Message",
    "Fragment",
    "Ping",
    "Pong",
    "CloseReceived",
    "Failure",
    "CloseCode",
    "Opcode",
    "ProtocolError",
    "InvalidText",
    "MessageTooBig",
    "apply_mask",
    "encode_frame",
    "is_valid_close_code",
    "parse_header",
    "HandshakeError",
    "UpgradeRequest",
    "accept_key",
    "generate_key",
    "parse_upgrade",
    "sha1_base64",
]
