"""One WebSocket connection's state machine, server side (RFC 6455).

Both directions go through it, and it never touches a socket or a clock:

* **Input.** :meth:`Connection.receive_data` takes the bytes read from the
  socket; :meth:`Connection.next_event` (or the :meth:`Connection.events`
  generator) hands out the events they complete, **one at a time**. The
  state changes and automatic replies of an event (the Pong for a Ping, the
  echo of a Close) happen when that event is taken, and the input behind it
  is not looked at until the next one is asked for. So the application
  handles event *n*, and what it sends then goes out, before the protocol
  acts on a later frame that fails the connection.
* **Output.** :meth:`send_text`, :meth:`send_binary`, :meth:`send_fragment`,
  :meth:`send_frame`, :meth:`send_ping`, :meth:`send_pong`,
  :meth:`send_close` and :meth:`fail` check the state and queue bytes, which
  :meth:`data_to_send` hands to the driver. Sending data after a Close frame
  raises :class:`InvalidState`.

Payloads are processed as they arrive, not when a frame is complete: each
piece of a frame is unmasked into the message's buffer and, for text, UTF-8
checked at once, so a bad byte fails the connection as soon as it is seen
and a large frame costs no more per step than the piece that was read. A
message is assembled in one buffer, and made into the ``str`` or ``bytes``
the application receives by one decode or one copy when it is complete.

With permessage-deflate (a :class:`~wsserver.protocol.deflate.PerMessageDeflate`
given at construction), a compressed message's data is inflated a slice of
output at a time: a step that produced a whole slice returns no event and
sets :attr:`Connection.work_pending`, so that the driver calls again in a
later turn rather than inflating a large message (or a small bomb) in one
unit of work. ``max_message_size`` applies to the inflated size, checked as
it grows. A large message to send is deflated a slice at a time too
(:meth:`Connection.send_more`), each slice a frame of its own.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Iterator
from typing import Any, Union

from .deflate import MESSAGE_TAIL, DeflateJob, PerMessageDeflate
from .events import CloseReceived, Event, Failure, Fragment, Message, Ping, Pong
from .frames import (
    MAX_CONTROL_PAYLOAD,
    AsciiText,
    CloseCode,
    FrameHeader,
    InvalidText,
    MessageTooBig,
    Opcode,
    Payload,
    ProtocolError,
    encode_close_payload,
    encode_frame,
    masked_copy,
    parse_close_payload,
    parse_header,
    unmask_into,
)

__all__ = [
    "Connection",
    "State",
    "InvalidState",
    "PreparedMessage",
    "prepare_message",
    "BufferPool",
    "as_bytes",
    "check_frame",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Data",
]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

#: What can be sent as a message: ``str`` as text; any bytes-like object
#: (bytes, bytearray, memoryview, array, ctypes structure) as binary.
Data = Union[str, bytes, bytearray, memoryview, Any]  # noqa: UP007  (a runtime alias: kept a typing.Union)

# The stdlib's incremental UTF-8 decoding step: it decodes what is complete
# and reports how much it consumed, leaving a split sequence for the next
# chunk. It validates a message's text as it arrives, a slice at a time.
_utf8_decode = codecs.utf_8_decode

# Text is decoded in slices of this size as it arrives: a bad byte fails the
# connection within one slice's work, and each decoded piece is a modest
# allocation; the message's str is one join of the pieces.
_DECODE_SLICE = 64 * 1024

# A compressed message is inflated this much output at a time: a step of
# about a quarter of a millisecond, after which the driver gets a turn.
_INFLATE_SLICE = 256 * 1024


def _compressed_limit(limit: int) -> int:
    """The most compressed bytes a message of at most ``limit`` bytes can
    take: deflate's stored blocks add 5 bytes per 64 KiB, and a sender may
    add a few empty blocks. Beyond it, 1009 needs no inflating."""
    return limit + limit // 1024 + 1024


class BufferPool:
    """Message buffers kept warm between messages, shared by connections.

    A connection takes a buffer when a message that is not a small whole
    frame starts, unmasks the message into it, and gives it back once the
    message is delivered. Reusing memory that was touched already saves the
    page faults of fresh large buffers (a quarter of the CPU of a large
    echo when measured), and an idle connection holds no buffer at all. The
    pool keeps at most ``max_buffers`` buffers and ``max_bytes`` in all; a
    buffer beyond that is let go.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024, max_buffers: int = 4) -> None:
        self.max_bytes = max_bytes
        self.max_buffers = max_buffers
        self._free: list[bytearray] = []
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes of the buffers kept in the pool."""
        return self._held

    def take(self) -> bytearray:
        """The most recently returned buffer (its contents are stale), or a new empty one."""
        if not self._free:
            return bytearray()
        buffer = self._free.pop()
        self._held -= len(buffer)
        return buffer

    def give(self, buffer: bytearray) -> None:
        """Return a buffer for reuse; it is let go if the pool is full."""
        if len(self._free) < self.max_buffers and self._held + len(buffer) <= self.max_bytes:
            self._free.append(buffer)
            self._held += len(buffer)


# Opcodes as plain ints: the per-frame checks compare against them.
_CONTINUATION, _TEXT, _BINARY = int(Opcode.CONTINUATION), int(Opcode.TEXT), int(Opcode.BINARY)
_CLOSE, _PING, _PONG = int(Opcode.CLOSE), int(Opcode.PING), int(Opcode.PONG)
_SENDABLE_OPCODES = frozenset(int(op) for op in Opcode)

# Payload pieces up to this size are sliced out of the input buffer (a small
# copy is cheaper than a memoryview); larger ones are read through a view.
_SLICE_LIMIT = 4096


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a Close frame and wait for the peer's
    CLOSED = "closed"  # both Close frames were exchanged, or the connection failed


class InvalidState(Exception):
    """A frame was to be sent that the connection's state does not allow
    (data after a Close frame, a continuation with no message to continue)."""


def as_bytes(data: Data) -> bytes:
    """``data`` as the bytes of a payload: ``str`` in UTF-8, a bytes-like object as it is."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    return memoryview(data).cast("B").tobytes()


class PreparedMessage:
    """A message encoded once, to be queued on any number of connections
    (:meth:`Connection.send_prepared`): a broadcast shares its bytes, and
    its compressed bytes between connections whose compression has no
    context (:attr:`PerMessageDeflate.shared_key`)."""

    __slots__ = ("opcode", "frames", "size", "payload", "deflated", "_prefixed")

    def __init__(self, opcode: int, frames: tuple[Payload, ...], size: int, payload: Payload) -> None:
        self.opcode = opcode
        #: The uncompressed frame, as buffers to write in order.
        self.frames = frames
        #: Bytes of the uncompressed frame on the wire.
        self.size = size
        self.payload = payload
        #: Its compressed forms by shared key, made when first needed.
        self.deflated: dict[tuple[int, int, int], tuple[Payload, ...] | DeflateJob] | None = None
        self._prefixed: tuple[bytes, PreparedMessage] | None = None

    def with_prefix(self, prefix: bytes) -> PreparedMessage:
        """The same message with ``prefix`` (ASCII) before its payload, made
        once and then shared, as the message itself is, by every connection
        it is queued on."""
        cached = self._prefixed
        if cached is not None and cached[0] == prefix:
            return cached[1]
        payload = self.payload
        # Large ASCII text stays encoded late; bytes are copied once.
        payload = AsciiText(prefix.decode("ascii") + payload.text[payload.start :]) if isinstance(payload, AsciiText) else prefix + payload
        prefixed = _prepare(self.opcode, payload)
        self._prefixed = (prefix, prefixed)
        return prefixed


# ASCII text over this size may be encoded as it is sent (see prepare_message).
_ENCODE_LATE = 64 * 1024


def prepare_message(data: Data, encode_late: bool = False) -> PreparedMessage:
    """Encode ``data`` as one unfragmented frame: ``str`` as text, bytes-like as binary.

    With ``encode_late``, a ``str`` of ASCII over 64 KiB is not encoded now:
    its frame's payload is an :class:`~wsserver.protocol.frames.AsciiText`,
    encoded a slice at a time as it is sent (the reactor's streams take it).
    Without it, the frames are bytes.
    """
    if isinstance(data, str):
        if encode_late and len(data) > _ENCODE_LATE and data.isascii():
            return _prepare(_TEXT, AsciiText(data))
        return _prepare(_TEXT, data.encode("utf-8"))
    return _prepare(_BINARY, data if isinstance(data, bytes) else as_bytes(data))


def _prepare(opcode: int, payload: Payload) -> PreparedMessage:
    frames = encode_frame(opcode, payload)
    return PreparedMessage(opcode, frames, len(frames[0]) if len(frames) == 1 else len(frames[0]) + len(payload), payload)


def check_frame(opcode: int, length: int, fin: bool) -> None:
    """Raise ``ValueError`` for a frame that no state allows sending: a
    reserved opcode (RFC 6455 section 5.2), or a control frame that is
    fragmented or carries over 125 bytes (section 5.5)."""
    if opcode not in _SENDABLE_OPCODES:
        raise ValueError(f"opcode {opcode:#x} is reserved")
    if opcode >= _CLOSE and (not fin or length > MAX_CONTROL_PAYLOAD):
        raise ValueError("control frames are final and carry at most 125 bytes")


def _pending_utf8_is_invalid(pending: bytes) -> bool:
    """Whether an incomplete UTF-8 sequence held back by the decoder can
    already be known to be invalid.

    CPython's incremental decoder rejects bad second bytes at chunk ends for
    every lead byte but 0xED, whose A0-BF continuations encode UTF-16
    surrogates; catch those so that invalid text fails as soon as it is certain.
    """
    return len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0


class Connection:
    """The server side of one WebSocket connection after the handshake.

    :param max_message_size: the largest message, in bytes, that is
        accepted (``None`` for no limit). A bigger one fails the connection
        with 1009 as soon as a frame header announces it, before its payload
        is buffered. When fragments are delivered one by one, the limit
        applies to each frame, since nothing is joined.
    :param deliver_fragments: return a :class:`Fragment` for every data
        frame instead of joining them into one :class:`Message`.
    :param buffers: where message buffers come from and go back to: give
        every connection of a server the same :class:`BufferPool`. By
        default the connection has a pool of its own, of one buffer.
    :param deflate: the connection's permessage-deflate, when the handshake
        negotiated it: RSV1 then marks compressed messages both ways.
    """

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        deliver_fragments: bool = False,
        buffers: BufferPool | None = None,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.deliver_fragments = deliver_fragments
        self.deflate = deflate
        self._buffers = buffers if buffers is not None else BufferPool(max_buffers=1)
        self.state = State.OPEN
        #: The Close code and reason received from the peer, once received.
        self.close_received: tuple[int, str] | None = None
        #: The Close code and reason that this side sent, once sent.
        self.close_sent: tuple[int, str] | None = None

        # Input received; what is before _input_pos is parsed already.
        self._input = bytearray()
        self._input_pos = 0
        self._parsing = True  # False once failed or closed: input is ignored
        self._error: ProtocolError | None = None  # found while taking input in; reported next
        # The frame whose payload is being read.
        self._header: FrameHeader | None = None
        self._remaining = 0
        self._frame_offset = 0
        self._control_payload = bytearray()
        # The data message being assembled: its type and size so far, and
        # the buffer it is unmasked into (from the pool, while a message is
        # under way), of which _assembled bytes are in use. Binary: the
        # message (or with deliver_fragments the current fragment). Text is
        # decoded as it arrives, into _text_parts: the buffer holds only the
        # start of a UTF-8 sequence split at the end of what came so far.
        self._message_type: int | None = None
        self._message_size = 0
        self._buffer: bytearray | None = None
        self._assembled = 0
        self._text_parts: list[str] = []
        self._fragment_type = 0
        # A compressed message being received: its data, unmasked and not
        # inflated yet, and whether some of it (in _zin or inside zlib) may
        # still give output; the inflated size of the message (of the frame
        # when fragments are delivered).
        self._compressed = False
        self._zin = bytearray()
        self._inflating = False
        self._inflated = 0
        #: Whether the last :meth:`next_event` stopped after a slice of work
        #: (inflating) with more to do: call it again without new input.
        self.work_pending = False

        self._outgoing: list[Payload] = []
        # The type of the fragmented message being sent, if one is; whole
        # messages sent meanwhile wait behind it, in order.
        self._sending_fragmented: int | None = None
        self._held: list[PreparedMessage] = []
        # A large message being compressed as it is sent, and how many of
        # its frames are queued.
        self._job: DeflateJob | None = None
        self._job_frames = 0
        # A Close frame (code, reason) that waits for the compressed message
        # under way, and the messages behind it, to be queued first.
        self._close_pending: tuple[int | None, str] | None = None
        #: Bytes of whole messages not queued yet: held behind a fragmented
        #: message or a compressed one being sent, and (uncompressed) the
        #: compressed one.
        self.held_size = 0

    # -- input -----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the peer; :meth:`next_event` parses them.

        After a failure or once the closing handshake is complete, input is
        ignored.
        """
        if not self._parsing or self._error is not None:
            return
        if self._input_pos:
            del self._input[: self._input_pos]  # cheap: a bytearray shrinks from the front in place
            self._input_pos = 0
        if not self._input:
            # Nothing before this input is left unhandled, so no event can
            # come first: the payload of a large frame is taken in where it
            # lies instead of being copied into the input buffer first (a
            # large message would be copied twice). An error found on the
            # way fails the connection at the next next_event().
            try:
                data = self._take_large_payload(memoryview(data).cast("B"))
            except ProtocolError as exc:
                self._error = exc
                return
        if data:
            self._input += data

    def _take_large_payload(self, view: memoryview) -> memoryview:
        """Take in the start of ``view`` if it is payload of a frame under
        way, or a large data frame's header and payload; return the rest."""
        if self._header is None:
            header = parse_header(view)
            if header is None or header.opcode >= _CLOSE or header.length <= _SLICE_LIMIT:
                return view  # small frames take the one-go path in next_event()
            self._start_frame(header)
            view = view[header.size :]
        take = min(self._remaining, len(view))
        if take:
            self._payload(view[:take])
            self._remaining -= take
        return view[take:]

    @property
    def buffered_input(self) -> int:
        """Bytes received and not yet parsed into events."""
        return len(self._input) - self._input_pos + len(self._zin)

    def events(self) -> Iterator[Event]:
        """The events of the input received so far, one at a time (see
        :meth:`next_event`), however many slices of work they take."""
        while True:
            event = self.next_event()
            if event is not None:
                yield event
            elif not self.work_pending:
                return

    def next_event(self) -> Event | None:
        """Parse received input up to the next event and return it; None
        when more input is needed.

        A protocol error returns a :class:`Failure` (its Close frame is
        queued) and ends parsing.
        """
        if not self._parsing:
            return None
        if self._error is not None:
            return self._fail_on(self._error)
        buf = self._input
        pos = self._input_pos
        if len(buf) - pos >= 6:
            # The most common frame of all, taken without building a header:
            # a final, masked text or binary frame of under 126 bytes, with
            # no RSV bit, arrived whole, while no message is under way.
            b0 = buf[pos]
            length = buf[pos + 1] - 0x80
            end = pos + 6 + length
            limit = self.max_message_size
            if (
                (b0 == 0x81 or b0 == 0x82)
                and 0 <= length < 126
                and end <= len(buf)
                and self._message_type is None
                and not self.deliver_fragments
                and (limit is None or length <= limit)
            ):
                self._input_pos = end
                try:
                    return self._small_message(b0 & 0x0F, masked_copy(buf[pos + 6 : end], buf[pos + 2 : pos + 6]))
                except ProtocolError as exc:
                    return self._fail_on(exc)
        self.work_pending = False  # (the fast path above never leaves work)
        try:
            while True:
                if self._header is None:
                    header = parse_header(buf, pos)
                    if header is None:
                        if pos == len(buf):
                            # All input is parsed: let the buffer go, so that
                            # an idle connection keeps none of its last read.
                            buf.clear()
                            pos = 0
                        return None
                    pos += header.size
                    length = header.length
                    if length <= _SLICE_LIMIT and pos + length <= len(buf) and self._is_whole_small_message(header):
                        # The common case, taken in one go: a small
                        # unfragmented message that has arrived whole.
                        # (The ignore: _is_whole_small_message checked that
                        # header.mask is not None, which mypy cannot see.)
                        pos += length
                        payload = masked_copy(buf[pos - length : pos], header.mask)  # type: ignore[arg-type]
                        if header.rsv1:
                            return self._small_compressed_message(header, payload)
                        return self._small_message(header.opcode, payload)
                    self._start_frame(header)
                remaining = self._remaining
                if remaining and len(buf) > pos:
                    take = min(len(buf) - pos, remaining)
                    if take <= _SLICE_LIMIT:
                        self._payload(buf[pos : pos + take])
                    else:
                        with memoryview(buf) as view:  # released before the buffer may resize
                            self._payload(view[pos : pos + take])
                    pos += take
                    self._remaining = remaining = remaining - take
                if self._inflating and self._inflate_slice():
                    self.work_pending = True  # a whole slice was inflated: the rest waits for the next call
                    return None
                if remaining:
                    return None
                event = self._end_frame()
                if event is not None:
                    return event
        except ProtocolError as exc:
            return self._fail_on(exc)
        finally:
            self._input_pos = pos

    def _is_whole_small_message(self, header: FrameHeader) -> bool:
        """Whether ``header`` starts a message that :meth:`_start_frame`
        would accept and that is one frame (the caller checks its size)."""
        opcode = header.opcode
        return (
            (opcode == _TEXT or opcode == _BINARY)
            and header.fin
            and header.mask is not None
            and not (header.rsv2 or header.rsv3)
            and (not header.rsv1 or self.deflate is not None)
            and self._message_type is None
            and not self.deliver_fragments
            and (self.max_message_size is None or header.length <= self.max_message_size)
        )

    def _small_message(self, opcode: int, payload: bytes | bytearray) -> Message:
        if opcode == _BINARY:
            return Message(opcode, payload if type(payload) is bytes else bytes(payload))
        try:
            return Message(opcode, payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidText("text message is not valid UTF-8") from None

    def _small_compressed_message(self, header: FrameHeader, data: bytes | bytearray) -> Message | None:
        """A small compressed message that arrived whole: inflated in one go
        if it fits a slice, otherwise taken on as a message under way."""
        deflate = self.deflate
        assert deflate is not None
        limit = self.max_message_size
        max_length = _INFLATE_SLICE if limit is None else min(_INFLATE_SLICE, limit + 1)
        zin = bytearray(data)
        zin += MESSAGE_TAIL
        out = deflate.inflate(zin, max_length)
        if len(out) < max_length:
            deflate.message_inflated()
            return self._small_message(header.opcode, out)
        self._start_frame(header)
        self._message_size = self._frame_offset = header.length
        self._remaining = 0
        self._zin = zin
        self._inflating = True
        self._take_inflated(out)
        self.work_pending = True
        return None

    def _start_frame(self, header: FrameHeader) -> None:
        # RFC 6455 section 5.1: a server fails a connection on an unmasked frame.
        if header.mask is None:
            raise ProtocolError("client frame is not masked")
        # Section 5.2: RSV1-3 are 0 unless an extension defines them.
        if header.rsv2 or header.rsv3 or (header.rsv1 and self.deflate is None):
            raise ProtocolError("reserved bit set without a negotiated extension")
        opcode = header.opcode
        # RFC 7692 section 6.1: RSV1 marks the first frame of a compressed
        # message, never a continuation or a control frame.
        if header.rsv1 and opcode != _TEXT and opcode != _BINARY:
            raise ProtocolError("RSV1 set on a continuation or control frame")
        # Section 5.4: continuations continue a message; messages do not interleave.
        if opcode == _CONTINUATION:
            if self._message_type is None:
                raise ProtocolError("continuation frame with no message to continue")
        elif opcode == _TEXT or opcode == _BINARY:
            if self._message_type is not None:
                raise ProtocolError("new data frame inside a fragmented message")
            self._message_type = opcode
            self._fragment_type = opcode
            self._compressed = header.rsv1
            self._inflated = 0
        if opcode < _CLOSE:
            if self.deliver_fragments:
                self._inflated = 0
            limit = self.max_message_size
            if limit is not None:
                # The limit is on the inflated size, checked as it grows;
                # compressed data too large to hold it fails at once.
                size = header.length if self.deliver_fragments else self._message_size + header.length
                if size > (_compressed_limit(limit) if self._compressed else limit):
                    raise MessageTooBig(f"message over {limit} bytes")
            if self._compressed and header.fin and not header.length:
                self._zin += MESSAGE_TAIL
                self._inflating = True
        self._header = header
        self._remaining = header.length
        self._frame_offset = 0

    def _payload(self, masked: bytearray | memoryview) -> None:
        """Unmask and take in the next piece of the current frame's payload."""
        header = self._header
        assert header is not None and header.mask is not None
        offset = self._frame_offset
        self._frame_offset = offset + len(masked)
        if header.opcode >= _CLOSE:
            self._control_payload += masked_copy(masked, header.mask, offset)
            return
        self._message_size += len(masked)
        if self._compressed:
            zin = self._zin
            unmask_into(zin, len(zin), masked, header.mask, offset)
            if header.fin and self._frame_offset == header.length:
                zin += MESSAGE_TAIL  # the message's data is complete
            self._inflating = True
            return
        if self._buffer is None:
            self._buffer = self._buffers.take()
        self._assembled = unmask_into(self._buffer, self._assembled, masked, header.mask, offset)
        if self._message_type == _TEXT:
            self._decode_text()

    def _inflate_slice(self) -> bool:
        """Inflate what came of a compressed message, at most a slice of
        output; return whether the slice was filled (more may be waiting)."""
        deflate = self.deflate
        assert deflate is not None
        limit = self.max_message_size
        max_length = _INFLATE_SLICE if limit is None else min(_INFLATE_SLICE, limit - self._inflated + 1)
        out = deflate.inflate(self._zin, max_length)
        full = len(out) == max_length
        self._inflating = full or bool(self._zin)
        if out:
            self._take_inflated(out)
        return full

    def _take_inflated(self, out: bytes) -> None:
        """Take in inflated data of the message (or fragment) under way."""
        self._inflated += len(out)
        limit = self.max_message_size
        if limit is not None and self._inflated > limit:
            raise MessageTooBig(f"message over {limit} bytes once inflated")
        if self._buffer is None:
            self._buffer = self._buffers.take()
        start = self._assembled
        self._assembled = start + len(out)
        self._buffer[start : self._assembled] = out
        if self._message_type == _TEXT:
            self._decode_text()

    def _decode_text(self) -> None:
        """Decode the text in the buffer, a slice at a time, so that invalid
        UTF-8 fails in the read that brought it; keep the start of a
        sequence split at the end for the next piece."""
        buffer = self._buffer
        assert buffer is not None
        end = self._assembled
        pos = 0
        parts = self._text_parts
        with memoryview(buffer) as view:  # released before the buffer may change size
            try:
                while pos < end:
                    text, consumed = _utf8_decode(view[pos : min(pos + _DECODE_SLICE, end)], "strict", False)
                    if not consumed:  # only the start of a sequence is left
                        break
                    parts.append(text)
                    pos += consumed
            except UnicodeDecodeError:
                raise InvalidText("text message is not valid UTF-8") from None
            rest = bytes(view[pos:end])  # at most 3 bytes
        if len(rest) >= 2 and _pending_utf8_is_invalid(rest):
            raise InvalidText("text message is not valid UTF-8")
        buffer[: len(rest)] = rest
        self._assembled = len(rest)

    def _end_frame(self) -> Event | None:
        """Finish the frame just read; return the event it completes, if any."""
        header = self._header
        assert header is not None
        self._header = None
        if header.opcode >= _CLOSE:
            payload = bytes(self._control_payload)
            self._control_payload.clear()
            return self._control_frame(header.opcode, payload)
        text = self._message_type == _TEXT
        if header.fin and text and self._assembled:
            # Held-back bytes are always the valid start of a sequence.
            raise InvalidText("text message ends inside a UTF-8 sequence")
        event: Event | None = None
        if self.deliver_fragments:
            event = Fragment(self._fragment_type, self._take_assembled(text), header.fin)
            self._fragment_type = _CONTINUATION
        if header.fin:
            if not self.deliver_fragments:
                assert self._message_type is not None
                event = Message(self._message_type, self._take_assembled(text))
            self._message_type = None
            self._message_size = 0
            if self._compressed:
                self._compressed = False
                assert self.deflate is not None
                self.deflate.message_inflated()
        return event

    def _take_assembled(self, text: bool) -> str | bytes:
        """What was assembled, as the application receives it: one join of
        the decoded text, or one copy of the bytes. (A sequence split at the
        end of a text fragment stays, to finish the next one.)"""
        data: str | bytes
        if text:
            parts, self._text_parts = self._text_parts, []
            data = parts[0] if len(parts) == 1 else "".join(parts)
        elif self._buffer is None:  # nothing arrived: an empty frame
            data = b""
        else:
            with memoryview(self._buffer) as view:
                data = bytes(view[: self._assembled])
            self._assembled = 0
        if not self._assembled:
            self._release_buffer()
        return data

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            self._buffers.give(self._buffer)
            self._buffer = None

    def _control_frame(self, opcode: int, payload: bytes) -> Event:
        if opcode == _PING:
            # Section 5.5.2: answer with a Pong carrying the same payload,
            # unless our Close frame has gone out already.
            if self.state is State.OPEN:
                self._queue(encode_frame(_PONG, payload))
            return Ping(payload)
        if opcode == _PONG:
            return Pong(payload)
        code, reason = parse_close_payload(payload)
        self.close_received = (code, reason)
        if self.state is State.OPEN:
            # Section 5.5.1: answer a Close with a Close, echoing its code
            # (after what was sent before it, as send_close does).
            self.send_close(None if code == CloseCode.NO_STATUS else code, "")
        if self._close_pending is not None:
            # Our Close waits behind a compressed message still being sent:
            # the handshake ends once it goes out (see send_more).
            self._stop_parsing()
        else:
            self._end()
        return CloseReceived(code, reason)

    def _fail_on(self, exc: ProtocolError) -> Failure:
        code = exc.close_code
        self.fail(code, exc.reason)
        return Failure(code, exc.reason)

    def release_idle_state(self) -> None:
        """Let go of the zlib state kept between messages (the driver calls
        it once the connection was idle): all of it but a decompressor that
        is in the middle of a compressed message."""
        if self.deflate is not None:
            self.deflate.release(keep_decompressor=self._compressed)

    def _stop_parsing(self) -> None:
        self._parsing = False
        self._input = bytearray()
        self._input_pos = 0

    def _end(self) -> None:
        """Closed: no more input is parsed, and what was received is let go."""
        self.state = State.CLOSED
        self._stop_parsing()
        self._release_buffer()
        self._assembled = 0
        self._text_parts = []
        self._zin = bytearray()
        self._inflating = False
        self.work_pending = False
        self._held = []
        self._job = None
        self._close_pending = None
        self.held_size = 0
        if self.deflate is not None:
            self.deflate.release()

    # -- output ----------------------------------------------------------

    def data_to_send(self) -> list[Payload]:
        """The bytes queued for the peer since the last call, in order (an
        :class:`~wsserver.protocol.frames.AsciiText` among them only for a
        message prepared with ``encode_late``)."""
        out = self._outgoing
        if not out:
            return []
        self._outgoing = []
        return out

    @property
    def can_send(self) -> bool:
        """Whether data frames may still be sent (no Close frame sent yet)."""
        return self.state is State.OPEN

    def send_text(self, text: str) -> None:
        """Queue a text message."""
        self.send_prepared(prepare_message(text))

    def send_binary(self, data: Data) -> None:
        """Queue a binary message (any bytes-like object)."""
        self.send_prepared(_prepare(_BINARY, as_bytes(data)))

    def send_prepared(self, message: PreparedMessage) -> None:
        """Queue a message encoded by :func:`prepare_message`, compressed if
        the connection negotiated it and the message is not under the
        threshold. While a fragmented message, or a large compressed one,
        is being sent, it waits behind that one."""
        self._check_open()
        if self._sending_fragmented is not None or self._job is not None:
            self._held.append(message)
            self.held_size += message.size
        elif self.deflate is None:
            self._outgoing.extend(message.frames)  # the common case, kept short: a broadcast takes it per client
        else:
            self._send_message(message)

    @property
    def compressing(self) -> bool:
        """Whether a large message is being compressed as it is sent: call
        :meth:`send_more` (when the previous slices are sent) until not."""
        return self._job is not None

    def send_more(self) -> None:
        """Compress and queue the next slice of the large message being
        sent; once it is all queued, the messages held behind it follow."""
        job = self._job
        if job is None:
            return
        if self._job_frames == len(job.frames) and not job.done:
            job.advance()
        self._queue_job()
        if self._job is None:
            self._release_held()
        if self._job is None and self._close_pending is not None:
            self._queue_close(*self._close_pending)
            self._close_pending = None
            if self.close_received is not None:
                self._end()  # the peer's Close came first: the handshake is complete

    def _send_message(self, message: PreparedMessage) -> None:
        deflate = self.deflate
        payload = message.payload
        if deflate is None or len(payload) < deflate.threshold:
            self._outgoing.extend(message.frames)
            return
        key = deflate.shared_key
        if key is None:
            compressed = deflate.compress(message.opcode, payload)
        else:
            # No context carries over: the compressed bytes are the same for
            # every connection with these settings, so a broadcast makes
            # them once (a large message's slices too, shared as they come).
            cache = message.deflated
            if cache is None:
                cache = message.deflated = {}
            found = cache.get(key)
            if found is None:
                found = cache[key] = deflate.compress(message.opcode, payload)
            compressed = found
        if type(compressed) is tuple:
            self._outgoing.extend(compressed)
            return
        assert isinstance(compressed, DeflateJob)
        self._job = compressed
        self._job_frames = 0
        self.held_size += compressed.size
        self._queue_job()

    def _queue_job(self) -> None:
        """Queue the frames of the compressed message under way made so far."""
        job = self._job
        assert job is not None
        frames = job.frames
        for frame in frames[self._job_frames :]:
            self._outgoing.extend(frame)
        self._job_frames = len(frames)
        if job.done:
            self._job = None
            self.held_size -= job.size

    def _finish_job(self) -> None:
        """Compress what is left of the message under way, and the messages
        held behind it, now: a raw data frame is to follow them. (Raw frames
        and large compressed messages are seldom mixed; this is the one
        place where compressing is not spread over turns.)"""
        while self._job is not None:
            self.send_more()

    def send_fragment(self, data: Data, fin: bool) -> None:
        """Queue one frame of a fragmented message: the first call's ``data``
        type (``str`` or bytes-like) sets the message type, later ones
        continue it, and ``fin`` ends it."""
        opcode = _TEXT if isinstance(data, str) else _BINARY
        if self._sending_fragmented is not None:
            if opcode != self._sending_fragmented:
                raise InvalidState("a fragment's type differs from its message's")
            opcode = _CONTINUATION
        self.send_frame(opcode, as_bytes(data), fin)

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        """Queue one raw frame with explicit opcode, FIN and RSV bits.

        The state still follows it: a Close frame starts the closing
        handshake, a non-final data frame starts a fragmented message that
        continuation frames must finish.
        """
        if opcode == _CLOSE:
            check_frame(opcode, len(payload), fin)
            if rsv1 or rsv2 or rsv3:
                raise ValueError("a Close frame has no RSV bits set")
            try:
                code, reason = parse_close_payload(payload)
            except ProtocolError as exc:
                raise ValueError(f"invalid Close payload: {exc.reason}") from None
            self.send_close(None if code == CloseCode.NO_STATUS else code, reason)
            return
        check_frame(opcode, len(payload), fin)
        self._check_open()
        if rsv1 and self.deflate is not None:
            raise ValueError(
                "RSV1 marks permessage-deflate's compressed messages on this connection: "
                "a raw frame with it would put the client's decompressor out of step"
            )
        if opcode < _CLOSE and self._job is not None:
            self._finish_job()
        if opcode == _CONTINUATION:
            if self._sending_fragmented is None:
                raise InvalidState("continuation frame with no message to continue")
        elif opcode < _CLOSE and self._sending_fragmented is not None:
            raise InvalidState("a new message inside a fragmented one")
        self._queue(encode_frame(opcode, payload, fin, rsv1, rsv2, rsv3))
        if opcode < _CLOSE:
            if not fin and opcode != _CONTINUATION:
                self._sending_fragmented = opcode
            elif fin and self._sending_fragmented is not None:
                self._sending_fragmented = None
                self._release_held()

    def send_ping(self, payload: bytes = b"") -> None:
        self.send_frame(_PING, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        self.send_frame(_PONG, payload)

    def send_close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (``code=None`` sends a Close frame
        without a code). Does nothing once a Close frame was sent.

        Nothing can be sent after it. Messages already sent go out before
        the Close frame: while a large compressed message is still being
        compressed (:attr:`compressing`), the Close frame waits for it and
        for the messages behind it. Messages held behind an unfinished
        fragmented message are dropped: that message cannot be finished.
        """
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        if self._job is not None:
            self._close_pending = (code, reason)
            return
        self._queue_close(code, reason)
        self._held = []
        self.held_size = 0

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 section 7.1.7): queue a Close frame
        with ``code`` unless one was sent, and stop parsing input. (What
        waits to be compressed or behind a fragmented message is dropped.)"""
        if self.state is State.OPEN or self._close_pending is not None:
            self._queue_close(code, reason)
        self._end()

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send data: the connection is {self.state.value}")

    def _queue(self, frames: tuple[Payload, ...]) -> None:
        self._outgoing.extend(frames)

    def _queue_close(self, code: int | None, reason: str) -> None:
        payload = encode_close_payload(code, reason)
        self.close_sent = (CloseCode.NO_STATUS if code is None else code, reason)
        self._queue(encode_frame(_CLOSE, payload))

    def _release_held(self) -> None:
        """Send the messages held behind the one that was under way, until
        one of them is a large compressed message, which the rest wait behind."""
        held, self._held = self._held, []
        for i, message in enumerate(held):
            if self._job is not None:
                self._held = held[i:]
                return
            self.held_size -= message.size
            self._send_message(message)
