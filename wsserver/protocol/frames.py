"""WebSocket frames (RFC 6455 section 5): opcodes, close codes, masking,
header parsing and frame building.

Nothing here does I/O. The functions work on whole byte strings with bulk
operations (``struct``, ``bytes.translate``, big-integer XOR); there is no
per-byte Python loop on the data path.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from typing import NamedTuple, Union

__all__ = [
    "Opcode",
    "CloseCode",
    "FrameHeader",
    "ProtocolError",
    "MessageTooBig",
    "InvalidText",
    "is_valid_close_code",
    "apply_mask",
    "masked_copy",
    "unmask_into",
    "SPEEDUPS",
    "parse_header",
    "encode_frame",
    "AsciiText",
    "Payload",
    "encode_close_payload",
    "parse_close_payload",
    "MAX_CONTROL_PAYLOAD",
]


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent on the wire: "the close frame had no code"
    ABNORMAL = 1006  # never sent on the wire: "the TCP connection just ended"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


MAX_CONTROL_PAYLOAD = 125


class ProtocolError(Exception):
    """The peer broke RFC 6455. ``close_code`` is the code to fail with."""

    close_code: int = CloseCode.PROTOCOL_ERROR

    def __init__(self, reason: str, close_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if close_code is not None:
            self.close_code = close_code


class InvalidText(ProtocolError):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    close_code = CloseCode.INVALID_DATA


class MessageTooBig(ProtocolError):
    """A message would exceed the configured size limit (close code 1009)."""

    close_code = CloseCode.MESSAGE_TOO_BIG


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


# --- masking ---------------------------------------------------------------

# XOR tables, one per key byte: ``data.translate(_XOR[k])`` XORs every byte with k.
_XOR = [bytes(b ^ k for b in range(256)) for k in range(256)]

# Up to this size one big-integer XOR beats every other way.
_SMALL_MASK_LIMIT = 512

# The pure-Python unmasking works on slices of this size, so that its
# temporaries (a quarter of a slice each) stay in the CPU's cache and come
# from the allocator's reused memory rather than fresh pages.
_UNMASK_SLICE = 64 * 1024


def _rotated(mask: bytes | bytearray, offset: int) -> bytes | bytearray:
    """The mask as seen from ``offset`` bytes into the payload."""
    shift = offset & 3
    return mask[shift:] + mask[:shift] if shift else mask


def _unmask_in_place_pure(buf: bytearray, start: int, end: int, mask: bytes | bytearray) -> None:
    # Four strided translations per slice, each XORing every fourth byte
    # with one key byte (~1 ms/MiB in CPython, against ~3.5 ms/MiB for the
    # integer XOR). Slices are a multiple of 4 bytes: the key stays aligned.
    xor0, xor1, xor2, xor3 = (_XOR[k] for k in mask)
    for lo in range(start, end, _UNMASK_SLICE):
        hi = min(lo + _UNMASK_SLICE, end)
        buf[lo:hi:4] = buf[lo:hi:4].translate(xor0)
        buf[lo + 1 : hi : 4] = buf[lo + 1 : hi : 4].translate(xor1)
        buf[lo + 2 : hi : 4] = buf[lo + 2 : hi : 4].translate(xor2)
        buf[lo + 3 : hi : 4] = buf[lo + 3 : hi : 4].translate(xor3)


def _numpy_unmasker() -> Callable[[bytearray, int, int, bytes | bytearray], None] | None:
    """The accelerated unmasking, when numpy can be imported (the optional
    ``speedups`` extra) and ``WSSERVER_SPEEDUPS`` is not ``0``: one XOR of
    machine words in place, at memory speed (~0.05 ms/MiB)."""
    if os.environ.get("WSSERVER_SPEEDUPS", "1") == "0":
        return None
    try:
        import numpy
    except ImportError:
        return None
    xor, frombuffer, uint32 = numpy.bitwise_xor, numpy.frombuffer, numpy.uint32

    def unmask_in_place(buf: bytearray, start: int, end: int, mask: bytes | bytearray) -> None:
        words = (end - start) >> 2
        if words:
            view = frombuffer(buf, uint32, words, start)
            xor(view, frombuffer(mask, uint32)[0], out=view)
            del view  # lets the bytearray resize again
        tail = start + 4 * words
        if tail < end:
            buf[tail:end] = _xor_small(buf[tail:end], mask)

    return unmask_in_place


def _xor_small(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


#: ``unmask_in_place(buf, start, end, mask)``: XOR ``buf[start:end]`` with
#: ``mask`` (aligned at ``start``), in place.
unmask_in_place = _numpy_unmasker() or _unmask_in_place_pure

#: Whether the numpy accelerator is in use.
SPEEDUPS = unmask_in_place is not _unmask_in_place_pure


def unmask_into(buf: bytearray, start: int, masked: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> int:
    """Write ``masked``, unmasked, into ``buf`` at ``start`` (growing ``buf``
    if it is shorter), as if ``masked`` started ``offset`` bytes into the
    masked payload; return where it ends. One copy, then the XOR in place."""
    end = start + len(masked)
    buf[start:end] = masked
    if end - start <= _SMALL_MASK_LIMIT:
        buf[start:end] = _xor_small(buf[start:end], _rotated(mask, offset))
    else:
        unmask_in_place(buf, start, end, _rotated(mask, offset))
    return end


def masked_copy(data: bytes | bytearray | memoryview, mask: bytes | bytearray, offset: int = 0) -> bytes | bytearray:
    """:func:`apply_mask` without its final conversion to ``bytes``: a large
    result is the ``bytearray`` that was XORed in place, so that callers that
    decode it save a copy."""
    if len(data) <= _SMALL_MASK_LIMIT:
        return _xor_small(data, _rotated(mask, offset))
    out = bytearray(data)
    unmask_in_place(out, 0, len(out), _rotated(mask, offset))
    return out


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, as if ``data`` started ``offset``
    bytes into the masked payload (so a payload can be unmasked in pieces).

    Masking is its own inverse, so this both masks and unmasks.
    """
    out = masked_copy(data, mask, offset)
    return out if type(out) is bytes else bytes(out)


# --- headers ---------------------------------------------------------------


class FrameHeader(NamedTuple):
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    mask: bytes | None
    length: int
    size: int  # bytes the header itself took on the wire


_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def parse_header(buf: bytes | bytearray | memoryview, start: int = 0) -> FrameHeader | None:
    """Parse the frame header at ``buf[start:]``; None if it is not complete yet.

    Checks what the header alone can tell: the opcode is known, control
    frames are final and at most 125 bytes, and the 64-bit length has its
    top bit clear. Extension bits and masking are the caller's policy.
    """
    available = len(buf) - start
    if available < 2:
        return None
    b0 = buf[start]
    b1 = buf[start + 1]
    opcode = b0 & 0x0F
    if opcode not in _KNOWN_OPCODES:
        raise ProtocolError(f"reserved opcode {opcode:#x}")
    fin = b0 >= 0x80
    length = b1 & 0x7F
    size = 2
    if length >= 126:
        if length == 126:
            size = 4
            if available < size:
                return None
            (length,) = _U16.unpack_from(buf, start + 2)
        else:
            size = 10
            if available < size:
                return None
            (length,) = _U64.unpack_from(buf, start + 2)
            if length >> 63:
                raise ProtocolError("frame length has its most significant bit set")
    if opcode >= 0x8:
        if not fin:
            raise ProtocolError("fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise ProtocolError("control frame payload over 125 bytes")
    mask = None
    if b1 >= 0x80:
        if available < size + 4:
            return None
        mask = bytes(buf[start + size : start + size + 4])
        size += 4
    return FrameHeader(fin, b0 & 0x40 != 0, b0 & 0x20 != 0, b0 & 0x10 != 0, opcode, mask, length, size)


# Server frame headers (no mask) for the three length encodings.
_HEAD_7 = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class AsciiText:
    """The UTF-8 bytes of a large ASCII ``str``, made a slice at a time as
    they are sent (:meth:`take`, :meth:`after`), instead of in one
    ``encode()`` as long as the text. ASCII text is its own UTF-8, so its
    length is known without encoding it."""

    __slots__ = ("text", "start")

    def __init__(self, text: str, start: int = 0) -> None:
        self.text = text
        self.start = start

    def __len__(self) -> int:
        return len(self.text) - self.start

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes."""
        return self.text[self.start : self.start + n].encode("ascii")

    def after(self, n: int) -> AsciiText:
        """What is left after the first ``n`` bytes."""
        return AsciiText(self.text, self.start + n)

    def __bytes__(self) -> bytes:
        return self.text[self.start :].encode("ascii")


#: A payload: bytes, or a large ASCII text encoded as it is sent.
Payload = Union[bytes, AsciiText]  # noqa: UP007  (a runtime alias)

# Payloads up to this size are copied behind their header into one buffer
# (one send call); larger ones travel as two buffers so that the payload is
# never copied.
_JOIN_LIMIT = 64 * 1024


def encode_frame(
    opcode: int,
    payload: Payload,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
) -> tuple[Payload, ...]:
    """An unmasked (server-to-client) frame as one or two buffers to write in
    order (an :class:`AsciiText` payload is always the second)."""
    b0 = opcode | 0x80 if fin else opcode
    if rsv1 or rsv2 or rsv3:
        b0 |= (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0)
    length = len(payload)
    if length < 126:
        header = _HEAD_7.pack(b0, length)
    elif length < 0x10000:
        header = _HEAD_16.pack(b0, 126, length)
    else:
        header = _HEAD_64.pack(b0, 127, length)
    if length <= _JOIN_LIMIT:
        return (header + bytes(payload),)
    return (header, payload)


def encode_close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a Close frame; ``code=None`` sends an empty one."""
    if code is None:
        return b""
    data = _U16.pack(code) + reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason longer than 123 bytes in UTF-8")
    return data


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Code and reason of a received Close frame; raises on invalid ones.

    An empty payload means "no status code" and gives 1005.
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    (code,) = _U16.unpack_from(payload)
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidText("close reason is not valid UTF-8") from None
    return code, reason
