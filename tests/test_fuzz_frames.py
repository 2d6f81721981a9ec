"""Property tests of the frame parser and the connection state machine:
random and mutated client byte streams, cut into random chunks.

Whatever comes in, :meth:`Connection.receive_data` raises nothing, ends in
at most one :class:`Failure` with one of the codes a receiver may fail with
(1002, 1007, 1009), queues a Close frame with that code, ignores all input
after it, and gives the same events however the bytes were split. The
messages it delivers are the ones ``wsproto`` (an independent
implementation) reads from the same bytes.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, ParseFailed
from wsproto.frame_protocol import Opcode as WsprotoOpcode

from rawws import client_frame, receive
from wsserver.protocol import (
    Connection,
    Failure,
    Fragment,
    Message,
    ProtocolError,
    parse_header,
)
from wsserver.protocol.events import CloseReceived, Ping, Pong

FAILURE_CODES = {1002, 1007, 1009}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

opcodes = st.sampled_from([0, 1, 2, 8, 9, 10, 3, 7, 11, 15])
masks = st.one_of(st.just(b"\x00\x00\x00\x00"), st.binary(min_size=4, max_size=4), st.none())
close_payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=1),
    st.builds(lambda code, reason: struct.pack("!H", code) + reason, st.integers(0, 5000), st.binary(max_size=20)),
)


@st.composite
def frames(draw):
    opcode = draw(opcodes)
    payload = draw(close_payloads) if opcode == 8 else draw(st.one_of(st.binary(max_size=200), st.text(max_size=60).map(str.encode)))
    fin = draw(st.booleans()) if opcode < 8 else draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 1, 2, 4]))
    mask = draw(st.sampled_from([True] * 9 + [False]))
    return client_frame(opcode, payload, fin=fin, rsv=rsv, mask=draw(masks.filter(bool)) if mask else None)


@st.composite
def mutated(draw, data: bytes):
    """``data`` with a few bytes flipped, cut, or inserted."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


streams = st.one_of(
    st.binary(max_size=400),
    st.lists(frames(), max_size=6).map(b"".join),
    st.lists(frames(), min_size=1, max_size=6).map(b"".join).flatmap(mutated),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def feed(connection: Connection, chunks: list[bytes]) -> list:
    events = []
    for chunk in chunks:
        events += receive(connection, chunk)
    return events


def check_outcome(connection: Connection, events: list) -> None:
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) <= 1
    if failures:
        assert events[-1] is failures[0], "events after a Failure"
        assert failures[0].code in FAILURE_CODES
        out = b"".join(connection.data_to_send())
        # The last thing queued is a Close frame with the failure's code.
        assert out[-(4 + len(failures[0].reason.encode())) :][:4] == b"\x88" + bytes([2 + len(failures[0].reason.encode())]) + struct.pack("!H", failures[0].code)
        assert receive(connection, b"\x81\x80\x00\x00\x00\x00") == []
    for event in events:
        assert isinstance(event, (Message, Fragment, Ping, Pong, CloseReceived, Failure))
        if isinstance(event, Message):
            assert isinstance(event.data, str if event.type == 1 else bytes)


@SETTINGS
@given(streams, st.lists(st.integers(0, 10_000), max_size=12), st.sampled_from([None, 64, 100_000]), st.booleans())
@example(struct.pack("!BBQ", 0x82, 0xFF, 2**63) + b"abcd", [], None, False)
def test_any_input_fails_cleanly_and_splits_do_not_matter(data, cuts, max_size, fragments):
    whole = Connection(max_size, deliver_fragments=fragments)
    events = receive(whole, data)
    check_outcome(whole, events)
    pieces = Connection(max_size, deliver_fragments=fragments)
    assert feed(pieces, split(data, cuts)) == events


@SETTINGS
@given(streams, st.integers(0, 20))
def test_parse_header_raises_only_protocol_errors(data, start):
    try:
        header = parse_header(data, min(start, len(data)))
    except ProtocolError as exc:
        assert exc.close_code == 1002
        return
    if header is not None:
        assert header.size <= len(data) and 0 <= header.length < 2**63


def wsproto_messages(data: bytes) -> tuple[list, bool]:
    """What wsproto reads from ``data`` as a server: the data messages, and whether it failed."""
    protocol = FrameProtocol(client=False, extensions=[])
    protocol.receive_bytes(data)
    messages, parts, failed = [], [], False
    try:
        for frame in protocol.received_frames():
            if frame.opcode in (WsprotoOpcode.TEXT, WsprotoOpcode.BINARY, WsprotoOpcode.CONTINUATION):
                parts.append(frame.payload)
                if frame.frame_finished and frame.message_finished:
                    messages.append("".join(parts) if isinstance(parts[0], str) else b"".join(parts))
                    parts = []
            elif frame.opcode is WsprotoOpcode.CLOSE:
                break
    except ParseFailed:
        failed = True
    return messages, failed


@SETTINGS
@given(st.lists(frames(), max_size=6).map(b"".join))
def test_the_same_messages_as_wsproto(data):
    connection = Connection(None)
    events = receive(connection, data)
    ours = [e.data for e in events if isinstance(e, Message)]
    theirs, they_failed = wsproto_messages(data)
    we_failed = any(isinstance(e, Failure) for e in events)
    # Both fail on the same streams, and deliver the same messages before
    # the fault (or the Close frame) that ends them.
    assert we_failed == they_failed, (events, theirs)
    assert ours == theirs
