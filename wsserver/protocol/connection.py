"""One WebSocket connection's state machine, server side (RFC 6455).

Feed it the bytes read from the socket with :meth:`Connection.receive_data`;
it returns the events they complete and queues what must be answered (pongs,
the echo of a Close frame, the Close frame that fails a broken connection),
which :meth:`Connection.data_to_send` hands over. It never touches a socket
or a clock.

Payloads are processed as they arrive, not when a frame is complete: each
received chunk is unmasked and, for text, UTF-8 checked at once, so a bad
byte fails the connection as soon as it is seen and a large frame costs no
more per step than the chunk that was read.
"""

from __future__ import annotations

import codecs
import enum

from .events import CloseReceived, Event, Failure, Fragment, Message, Ping, Pong
from .frames import (
    CloseCode,
    FrameHeader,
    InvalidText,
    MessageTooBig,
    Opcode,
    ProtocolError,
    encode_close_payload,
    encode_frame,
    masked_copy,
    parse_close_payload,
    parse_header,
)

__all__ = ["Connection", "State", "DEFAULT_MAX_MESSAGE_SIZE"]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# The stdlib's incremental UTF-8 decoding step: it decodes what is complete
# and reports how much it consumed, leaving a split sequence for the next
# chunk. (codecs' IncrementalDecoder wraps it in Python and copies every
# chunk behind the held-back bytes; calling it directly avoids both.)
_utf8_decode = codecs.utf_8_decode

# Opcodes as plain ints: the per-frame checks compare against them.
_CONTINUATION, _TEXT, _BINARY, _CLOSE = int(Opcode.CONTINUATION), int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CLOSE)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a Close frame and wait for the peer's
    CLOSED = "closed"  # both Close frames were exchanged, or the connection failed


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
    """

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        deliver_fragments: bool = False,
    ) -> None:
        self.max_message_size = max_message_size
        self.deliver_fragments = deliver_fragments
        self.state = State.OPEN
        #: The Close code and reason received from the peer, once received.
        self.close_received: tuple[int, str] | None = None
        #: The Close code and reason that this side sent, once sent.
        self.close_sent: tuple[int, str] | None = None

        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        # The frame whose payload is being read.
        self._header: FrameHeader | None = None
        self._remaining = 0
        self._frame_offset = 0
        self._control_payload = bytearray()
        # The data message being assembled: its type, its size so far and
        # its parts (str pieces for text, bytes for binary).
        self._message_type: int | None = None
        self._message_size = 0
        self._parts: list = []
        # The start of a UTF-8 sequence split across chunks, held back until
        # its end arrives.
        self._utf8_pending = b""
        self._fragment_type = 0

    # -- input -----------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume bytes from the peer; return the events they complete.

        After a :class:`Failure` or once the closing handshake is complete,
        further input is ignored.
        """
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        buf = self._buffer
        if buf:
            buf += data
            src: bytearray | memoryview = buf
        else:
            # Nothing held back (the usual case): read the chunk where it
            # lies, and keep only an incomplete header at its end.
            src = memoryview(data).cast("B")
        end = len(src)
        pos = 0
        try:
            while True:
                if self._header is None:
                    header = parse_header(src, pos)
                    if header is None:
                        break
                    pos += header.size
                    self._start_frame(header)
                if self._remaining:
                    take = min(self._remaining, end - pos)
                    if take == 0:
                        break
                    self._payload(src[pos : pos + take])
                    pos += take
                    self._remaining -= take
                    if self._remaining:
                        break
                self._end_frame(events)
                if self.state is State.CLOSED:
                    break
        except ProtocolError as exc:
            events.append(self._fail(exc.close_code, exc.reason))
            buf.clear()
            return events
        if src is buf:
            del buf[:pos]
        elif pos < end and self.state is not State.CLOSED:
            buf += src[pos:]
        return events

    def _start_frame(self, header: FrameHeader) -> None:
        if header.mask is None:
            raise ProtocolError("client frame is not masked")
        if header.rsv1 or header.rsv2 or header.rsv3:
            raise ProtocolError("reserved bit set without a negotiated extension")
        opcode = header.opcode
        if opcode == _CONTINUATION:
            if self._message_type is None:
                raise ProtocolError("continuation frame with no message to continue")
        elif opcode == _TEXT or opcode == _BINARY:
            if self._message_type is not None:
                raise ProtocolError("new data frame inside a fragmented message")
            self._message_type = opcode
            self._fragment_type = opcode
        if opcode < _CLOSE and self.max_message_size is not None:
            size = header.length if self.deliver_fragments else self._message_size + header.length
            if size > self.max_message_size:
                raise MessageTooBig(f"message over {self.max_message_size} bytes")
        self._header = header
        self._remaining = header.length
        self._frame_offset = 0

    def _payload(self, masked: bytearray | memoryview) -> None:
        """Unmask and take in the next piece of the current frame's payload."""
        header = self._header
        assert header is not None
        chunk = masked_copy(masked, header.mask, self._frame_offset)  # type: ignore[arg-type]
        self._frame_offset += len(chunk)
        if header.opcode >= _CLOSE:
            self._control_payload += chunk
            return
        self._message_size += len(chunk)
        if self._message_type == _TEXT:
            self._parts.append(self._decode_text(chunk))
        else:
            self._parts.append(chunk)

    def _decode_text(self, chunk: bytes | bytearray) -> str:
        """Decode what is complete; hold back a sequence split at the chunk's end."""
        pending = self._utf8_pending
        data = pending + chunk if pending else chunk
        try:
            text, consumed = _utf8_decode(data, "strict", False)
        except UnicodeDecodeError:
            raise InvalidText("text message is not valid UTF-8") from None
        if consumed < len(data):
            pending = bytes(data[consumed:])  # at most 3 bytes
            if _pending_utf8_is_invalid(pending):
                raise InvalidText("text message is not valid UTF-8")
            self._utf8_pending = pending
        elif pending:
            self._utf8_pending = b""
        return text

    def _end_frame(self, events: list[Event]) -> None:
        header = self._header
        assert header is not None
        self._header = None
        if header.opcode >= _CLOSE:
            payload = bytes(self._control_payload)
            self._control_payload.clear()
            self._control_frame(header.opcode, payload, events)
            return
        if header.fin and self._utf8_pending:
            # Held-back bytes are always the valid start of a sequence.
            raise InvalidText("text message ends inside a UTF-8 sequence")
        if self.deliver_fragments:
            events.append(Fragment(self._fragment_type, self._joined(), header.fin))
            self._parts = []
            self._fragment_type = _CONTINUATION
        if header.fin:
            if not self.deliver_fragments:
                events.append(Message(self._message_type, self._joined()))  # type: ignore[arg-type]
            self._parts = []
            self._message_type = None
            self._message_size = 0

    def _joined(self) -> str | bytes:
        parts = self._parts
        if self._message_type == _TEXT:
            return "".join(parts)
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)  # also turns a lone bytearray into bytes

    def _control_frame(self, opcode: int, payload: bytes, events: list[Event]) -> None:
        if opcode == Opcode.PING:
            events.append(Ping(payload))
            if self.state is State.OPEN:
                self._outgoing.extend(encode_frame(Opcode.PONG, payload))
        elif opcode == Opcode.PONG:
            events.append(Pong(payload))
        else:
            code, reason = parse_close_payload(payload)
            self.close_received = (code, reason)
            events.append(CloseReceived(code, reason))
            if self.state is State.OPEN:
                # Echo the peer's code, as RFC 6455 section 5.5.1 suggests.
                echo = None if code == CloseCode.NO_STATUS else code
                self._queue_close(echo, "")
            self.state = State.CLOSED

    def _fail(self, code: int, reason: str) -> Failure:
        if self.state is State.OPEN:
            self._queue_close(code, reason)
        self.state = State.CLOSED
        return Failure(code, reason)

    # -- output ----------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """The bytes the protocol itself must send (pongs, Close frames), in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the Close frame goes to :meth:`data_to_send`."""
        if self.state is not State.OPEN:
            return
        self._queue_close(code, reason)
        self.state = State.CLOSING

    def _queue_close(self, code: int | None, reason: str) -> None:
        payload = encode_close_payload(code, reason)
        self.close_sent = (CloseCode.NO_STATUS if code is None else code, reason)
        self._outgoing.extend(encode_frame(Opcode.CLOSE, payload))

    @property
    def can_send(self) -> bool:
        """Whether data frames may still be sent (no Close frame sent yet)."""
        return self.state is State.OPEN
