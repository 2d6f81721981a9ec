"""permessage-deflate (RFC 7692): negotiation, and one connection's codec.

:class:`Compression` is what a server accepts and asks for.
:func:`negotiate` reads the client's ``Sec-WebSocket-Extensions`` offers and
returns the :class:`Agreement` on the first one it can honour, whose
``response`` is the header value to answer with. :class:`PerMessageDeflate`
is one connection's compressor and decompressor under that agreement; the
:class:`~wsserver.protocol.Connection` decides which messages go through it
and feeds it a slice at a time.

**Memory.** zlib's state is made when the first compressed message needs it
and let go when nothing needs it any more: after each message where the
agreement has no context takeover, otherwise when the driver finds the
connection idle (:meth:`PerMessageDeflate.release`). An idle connection
holds no zlib state. A decompressor whose client keeps its context across
messages keeps the last window of text it produced (at most
``2**client_window_bits`` bytes) so that it can be made again with that
window as its dictionary.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from .frames import AsciiText, Opcode, Payload, ProtocolError, encode_frame
from .handshake import HandshakeError

__all__ = [
    "EXTENSION_NAME",
    "MESSAGE_TAIL",
    "Compression",
    "DEFAULT_COMPRESSION",
    "Agreement",
    "DeflateJob",
    "PerMessageDeflate",
    "negotiate",
    "parse_extensions",
]

EXTENSION_NAME = "permessage-deflate"

#: RFC 7692 section 7.2.1: a compressed message's data ends, after a sync
#: flush, with these four bytes, which are removed before sending and
#: appended again before the end of the message is inflated (7.2.2).
MESSAGE_TAIL = b"\x00\x00\xff\xff"

# A large message is deflated this much input at a time, each slice sent as
# a frame of its own (about 0.25 ms of CPU at level 1 on JSON), so that no
# unit of work grows with the message.
DEFLATE_SLICE = 64 * 1024

_CONTINUATION = int(Opcode.CONTINUATION)


@dataclass(frozen=True)
class Compression:
    """How a server answers a client's permessage-deflate offers.

    The defaults are chosen for a GUI thread's CPU and for memory: see the
    README's table of what each setting costs per connection.

    :param server_max_window_bits: the LZ77 window the server compresses
        with, 9 to 15 (a smaller one is used if the client asks for it).
        12 (4 KiB) with ``mem_level`` 5 makes a compressor of 38 KiB; 15
        with the zlib default 8 would make one of 262 KiB.
    :param client_max_window_bits: the window the server asks the client to
        compress with, when the client's offer allows asking; None leaves
        the client its own choice (the decompressor then needs up to 39 KiB
        while a message is inflated).
    :param server_no_context_takeover: compress every message on its own.
        It costs compression of small messages (they no longer refer to the
        ones before), and it lets :meth:`~wsserver.Server.publish` compress
        a message once for every client instead of once per client.
    :param client_no_context_takeover: ask clients to compress every
        message on its own (RFC 7692 lets a server always ask), so that the
        server's decompressor lives only while a message is inflated.
    :param level: zlib's compression level, 1 (fastest) to 9. Level 1
        deflates JSON at about twice the speed of level 6 for a quarter
        more bytes.
    :param mem_level: zlib's memory level, 1 to 9.
    :param threshold: messages smaller than this many bytes are sent
        uncompressed (deflate's fixed cost outweighs what it saves on them).
    :param idle_timeout: seconds after which a connection that compressed or
        inflated nothing lets its zlib state go (None keeps it while the
        connection lasts). Making it again costs about 2 µs; the cost is
        that the next message cannot refer to the ones before it.
    """

    server_max_window_bits: int = 12
    client_max_window_bits: int | None = None
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = True
    level: int = 1
    mem_level: int = 5
    threshold: int = 128
    idle_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        # zlib cannot deflate with an 8-bit raw window: 9 is the least.
        if not 9 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits is 9 to 15")
        if self.client_max_window_bits is not None and not 9 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits is None or 9 to 15")
        if not (self.level == -1 or 0 <= self.level <= 9):
            raise ValueError("level is -1 (zlib's default) or 0 to 9")
        if not 1 <= self.mem_level <= 9:
            raise ValueError("mem_level is 1 to 9")
        if self.threshold < 0:
            raise ValueError("threshold is 0 or more")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout is None or more than 0")


#: The settings a :class:`~wsserver.Server` negotiates unless told otherwise.
DEFAULT_COMPRESSION = Compression()


@dataclass(frozen=True)
class Agreement:
    """The permessage-deflate parameters agreed with one client."""

    #: The ``Sec-WebSocket-Extensions`` value of the 101 answer.
    response: str
    #: The window the server compresses with.
    server_window_bits: int
    #: The window the server inflates with (the most the client may use).
    client_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    compression: Compression


# -- the Sec-WebSocket-Extensions header (RFC 6455 section 9.1) ---------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_OWS = r"[ \t]*"
_TOKEN_RE = re.compile(_TOKEN)
_EXTENSION_RE = re.compile(_OWS + "(" + _TOKEN + ")")
_PARAM_RE = re.compile(f"{_OWS};{_OWS}({_TOKEN})(?:{_OWS}={_OWS}({_TOKEN}|{_QUOTED}))?")
_SEPARATOR_RE = re.compile(f"{_OWS}(?:,|$)")
_UNESCAPE_RE = re.compile(r"\\(.)")

#: One offered extension: its name and its parameters, in order, each with
#: its value or None.
Extension = tuple[str, list[tuple[str, Union[str, None]]]]  # noqa: UP007  (a runtime alias)


def parse_extensions(values: Iterable[str]) -> list[Extension]:
    """The extensions of ``Sec-WebSocket-Extensions`` header values, in order.

    Raises ``ValueError`` when a value does not follow the grammar
    (including a quoted parameter value that is not a token once unquoted,
    as RFC 6455 section 9.1 requires).
    """
    extensions: list[Extension] = []
    for value in values:
        pos = 0
        while pos < len(value):
            separator = _SEPARATOR_RE.match(value, pos)
            if separator is not None and separator.end() > pos:  # an empty list element
                pos = separator.end()
                continue
            match = _EXTENSION_RE.match(value, pos)
            if match is None:
                raise ValueError(f"cannot parse extensions {value!r}")
            name, pos = match.group(1), match.end()
            params: list[tuple[str, str | None]] = []
            while (param := _PARAM_RE.match(value, pos)) is not None:
                param_value = param.group(2)
                if param_value is not None and param_value.startswith('"'):
                    param_value = _UNESCAPE_RE.sub(r"\1", param_value[1:-1])
                    if not _TOKEN_RE.fullmatch(param_value):
                        raise ValueError(f"quoted extension parameter {param_value!r} is not a token")
                params.append((param.group(1), param_value))
                pos = param.end()
            separator = _SEPARATOR_RE.match(value, pos)
            if separator is None:
                raise ValueError(f"cannot parse extensions {value!r}")
            pos = separator.end()
            extensions.append((name, params))
    return extensions


def negotiate(compression: Compression, values: Iterable[str]) -> Agreement | None:
    """The agreement on the first permessage-deflate offer in ``values`` (the
    ``Sec-WebSocket-Extensions`` header values) that ``compression`` can
    honour; None when there is none, and the connection goes on uncompressed.

    Raises :class:`~wsserver.protocol.HandshakeError` (400) only when the
    header cannot be parsed: RFC 7692 section 5 has an offer that is invalid
    or cannot be honoured declined, not refused.
    """
    try:
        offers = parse_extensions(values)
    except ValueError as exc:
        raise HandshakeError(400, f"invalid Sec-WebSocket-Extensions header: {exc}") from None
    for name, params in offers:
        if name == EXTENSION_NAME:
            agreement = _accept(compression, tuple(params))
            if agreement is not None:
                return agreement
    return None


def _window_bits(value: str | None) -> int | None:
    """The value of a ``*_max_window_bits`` parameter, or None if invalid
    (RFC 7692 section 7.1.2: a decimal 8 to 15, no leading zero)."""
    if value is None or not value.isdigit() or value.startswith("0") or not 8 <= int(value) <= 15:
        return None
    return int(value)


@functools.lru_cache(maxsize=64)
def _accept(compression: Compression, params: tuple[tuple[str, str | None], ...]) -> Agreement | None:
    """The agreement on one offer, or None to decline it (RFC 7692 section 5:
    an unknown, invalid or repeated parameter, or an unsupported configuration).

    Clients make the same few offers (a browser's is always the same): the
    agreements are kept, and connections share them."""
    names = [name for name, _ in params]
    if len(set(names)) != len(names):
        return None
    server_no_context = compression.server_no_context_takeover
    client_no_context = compression.client_no_context_takeover
    server_bits: int | None = None
    client_bits_offered = False
    client_bits: int | None = None
    for name, value in params:
        if name == "server_no_context_takeover" or name == "client_no_context_takeover":
            if value is not None:
                return None
            # The client asks the server (7.1.1.1), or hints that it will
            # not take over its own context, which costs the server nothing
            # to accept (7.1.1.2).
            if name == "server_no_context_takeover":
                server_no_context = True
            else:
                client_no_context = True
        elif name == "server_max_window_bits":
            server_bits = _window_bits(value)
            # zlib cannot deflate with an 8-bit raw window: decline, since
            # a 9-bit window may refer further back than the client keeps.
            if server_bits is None or server_bits < 9:
                return None
        elif name == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                client_bits = _window_bits(value)
                if client_bits is None:
                    return None
        else:
            return None
    response = [EXTENSION_NAME]
    if server_no_context:
        response.append("server_no_context_takeover")
    if client_no_context:
        response.append("client_no_context_takeover")
    window = compression.server_max_window_bits
    if server_bits is not None:
        # 7.1.2.1: the answer may only name it if the offer did, with the
        # same or a smaller value; without it a smaller window needs no word.
        window = min(window, server_bits)
        response.append(f"server_max_window_bits={window}")
    # 7.1.2.2: an answer without client_max_window_bits lets the client use
    # a 15-bit window whatever it offered, and may name one only if the
    # offer has the parameter, no larger than its value. So the answer
    # names the smaller of the offer's value and the server's wish, and
    # the server inflates with that (at least 9 bits: zlib's raw deflate
    # makes an 8-bit window a 9-bit one).
    client_window = 15
    wanted = compression.client_max_window_bits
    if client_bits_offered and (client_bits is not None or wanted is not None):
        client_window = min(client_bits or 15, wanted or 15)
        response.append(f"client_max_window_bits={client_window}")
    return Agreement(
        response="; ".join(response),
        server_window_bits=window,
        client_window_bits=max(client_window, 9),
        server_no_context_takeover=server_no_context,
        client_no_context_takeover=client_no_context,
        compression=compression,
    )


# -- one connection's codec ------------------------------------------------------


def _payload_slice(payload: Payload, start: int, size: int) -> bytes:
    if isinstance(payload, AsciiText):
        return payload.after(start).take(size) if start else payload.take(size)
    return payload[start : start + size]


def _sync_flushed(data: bytes) -> bytes:
    """Compressed data after a sync flush, without the flush's last four bytes."""
    assert data.endswith(MESSAGE_TAIL), "a sync flush ends with 00 00 ff ff"
    return data[:-4]


class DeflateJob:
    """One large message deflated a slice at a time, as the connection sends
    it: the frames made so far, and the rest of the message.

    Under ``server_no_context_takeover`` a job is shared by every
    connection with the same settings that is sent the same message
    (:meth:`~wsserver.Server.publish`): each takes the frames in order, and
    whichever needs a frame that is not made yet makes it.
    """

    __slots__ = ("frames", "done", "size", "_opcode", "_payload", "_pos", "_compressor")

    def __init__(self, opcode: int, payload: Payload, compressor: zlib._Compress) -> None:
        #: The frames made so far, each as buffers to write in order.
        self.frames: list[tuple[Payload, ...]] = []
        #: Whether the last frame is made.
        self.done = False
        #: The uncompressed size of the message.
        self.size = len(payload)
        self._opcode = opcode
        self._payload: Payload | None = payload
        self._pos = 0
        self._compressor: zlib._Compress | None = compressor

    def advance(self) -> None:
        """Deflate the next slice of the message; a frame is made when zlib
        has output (always for the last slice)."""
        payload, compressor = self._payload, self._compressor
        assert payload is not None and compressor is not None, "advance() after the last slice"
        size = min(DEFLATE_SLICE, len(payload) - self._pos)
        data = compressor.compress(_payload_slice(payload, self._pos, size))
        self._pos += size
        last = self._pos >= len(payload)
        if last:
            data = _sync_flushed(data + compressor.flush(zlib.Z_SYNC_FLUSH))
            self.done = True
            self._payload = self._compressor = None
        if data or last:
            # RFC 7692 section 6.1: RSV1 on the first frame of the message only.
            first = not self.frames
            self.frames.append(encode_frame(self._opcode if first else _CONTINUATION, data, last, first))


class PerMessageDeflate:
    """One connection's compressor and decompressor under an :class:`Agreement`.

    zlib objects are made when a message first needs them and dropped when
    the agreement says no context carries over, or on :meth:`release`.
    """

    __slots__ = ("agreement", "threshold", "shared_key", "used", "_compressor", "_decompressor", "_ended", "_window", "_recent")

    def __init__(self, agreement: Agreement) -> None:
        self.agreement = agreement
        #: Messages smaller than this are sent uncompressed.
        self.threshold = agreement.compression.threshold
        #: When no context carries over, the settings that make a message's
        #: compressed bytes the same for every connection that has them (a
        #: broadcast compresses once per key); None otherwise.
        self.shared_key: tuple[int, int, int] | None = None
        if agreement.server_no_context_takeover:
            compression = agreement.compression
            self.shared_key = (agreement.server_window_bits, compression.level, compression.mem_level)
        #: Set whenever a message is deflated or inflated; the driver clears
        #: it to find the connection idle.
        self.used = False
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        # The client ended its deflate stream inside the current message.
        self._ended = False
        # The last window of inflated text, kept only while the client may
        # refer back to it: a released decompressor is made again from it.
        self._window = 0 if agreement.client_no_context_takeover else 1 << agreement.client_window_bits
        self._recent = b""

    @property
    def holds_state(self) -> bool:
        """Whether zlib state is kept between messages (and :meth:`release` would free some)."""
        return self._compressor is not None or self._decompressor is not None

    def release(self, keep_decompressor: bool = False) -> None:
        """Let the zlib state go. The next message makes it again: a new
        compressor refers to nothing sent before (the client's decompressor
        does not mind), a new decompressor starts from the recent window.
        ``keep_decompressor`` keeps one that is inflating a message (a new
        one could not take up a deflate stream in the middle)."""
        self._compressor = None
        if not keep_decompressor:
            self._decompressor = None
            self._ended = False

    # -- output ------------------------------------------------------------

    def _new_compressor(self) -> zlib._Compress:
        agreement = self.agreement
        compression = agreement.compression
        return zlib.compressobj(compression.level, zlib.DEFLATED, -agreement.server_window_bits, compression.mem_level)

    def _message_compressor(self) -> zlib._Compress:
        """The compressor for the next message: the connection's own when
        context carries over, else a new one."""
        self.used = True
        if self.shared_key is not None:
            return self._new_compressor()
        if self._compressor is None:
            self._compressor = self._new_compressor()
        return self._compressor

    def compress(self, opcode: int, payload: Payload) -> tuple[Payload, ...] | DeflateJob:
        """A message's compressed frame, or for one over a slice a
        :class:`DeflateJob` whose first slice is done."""
        compressor = self._message_compressor()
        if len(payload) > DEFLATE_SLICE:
            job = DeflateJob(opcode, payload, compressor)
            job.advance()
            return job
        data = compressor.compress(payload if isinstance(payload, bytes) else bytes(payload))
        return encode_frame(opcode, _sync_flushed(data + compressor.flush(zlib.Z_SYNC_FLUSH)), True, True)

    # -- input -------------------------------------------------------------

    def inflate(self, data: bytearray, max_length: int) -> bytes:
        """Inflate at most ``max_length`` bytes from the start of ``data``,
        and delete from ``data`` the input that was used.

        Raises :class:`~wsserver.protocol.ProtocolError` for data that is
        not deflate's.
        """
        self.used = True
        if self._ended:
            # A final block ended the client's deflate stream (7.2.3.3): the
            # rest of the message is at most the tail appended here, and is
            # ignored however it arrives.
            del data[:]
            return b""
        decompressor = self._decompressor
        if decompressor is None:
            bits = -self.agreement.client_window_bits
            decompressor = zlib.decompressobj(bits, zdict=self._recent) if self._recent else zlib.decompressobj(bits)
            self._decompressor = decompressor
        try:
            out = decompressor.decompress(data, max_length)
        except zlib.error as exc:
            raise ProtocolError(f"compressed data is invalid ({exc})") from None
        if decompressor.eof:
            # The client ended its deflate stream (a final block, 7.2.3.3):
            # the next message starts a new one, from the recent window.
            del data[:]
            self._decompressor = None
            self._ended = True
        else:
            del data[: len(data) - len(decompressor.unconsumed_tail)]
        if self._window and out:
            self._recent = (self._recent + out)[-self._window :] if len(out) < self._window else out[-self._window :]
        return out

    def message_inflated(self) -> None:
        """A compressed message was inflated to its end."""
        self._ended = False
        if self.agreement.client_no_context_takeover:
            self._decompressor = None
