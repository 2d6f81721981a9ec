"""connection.py: the server-side state machine, fed with bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawws import client_frame, close_payload, receive
from wsserver.protocol import (
    CloseReceived,
    Connection,
    Failure,
    Fragment,
    Message,
    Opcode,
    Ping,
    Pong,
    State,
)
from wsserver.protocol.frames import parse_close_payload, parse_header


def sent_frames(conn: Connection) -> list[tuple[int, bytes]]:
    """Decode what the connection queued for the peer into (opcode, payload)."""
    data = b"".join(conn.data_to_send())
    frames = []
    while data:
        header = parse_header(data)
        assert header is not None and header.mask is None
        frames.append((header.opcode, data[header.size : header.size + header.length]))
        data = data[header.size + header.length :]
    return frames


def feed(conn: Connection, *frames: bytes) -> list:
    return receive(conn, b"".join(frames))


def assert_failed(conn: Connection, events: list, code: int) -> None:
    assert isinstance(events[-1], Failure) and events[-1].code == code, events
    assert conn.state is State.CLOSED
    frames = sent_frames(conn)
    assert frames[-1][0] == Opcode.CLOSE
    assert parse_close_payload(frames[-1][1])[0] == code
    # A failed connection takes no more input.
    assert receive(conn, client_frame(Opcode.TEXT, b"late")) == []


# -- messages ------------------------------------------------------------


def test_text_and_binary_messages() -> None:
    conn = Connection()
    events = feed(conn, client_frame(Opcode.TEXT, "héllo".encode()), client_frame(Opcode.BINARY, b"\x00\xff"))
    assert events == [Message(1, "héllo"), Message(2, b"\x00\xff")]
    assert isinstance(events[1].data, bytes)


def test_empty_messages() -> None:
    conn = Connection()
    assert feed(conn, client_frame(Opcode.TEXT), client_frame(Opcode.BINARY)) == [Message(1, ""), Message(2, b"")]


def test_fragmented_message_is_joined_with_control_frames_between() -> None:
    conn = Connection()
    events = feed(
        conn,
        client_frame(Opcode.TEXT, b"frag", fin=False),
        client_frame(Opcode.PING, b"p"),
        client_frame(Opcode.CONTINUATION, b"men", fin=False),
        client_frame(Opcode.CONTINUATION, b"ted"),
    )
    assert events == [Ping(b"p"), Message(1, "fragmented")]
    assert sent_frames(conn) == [(Opcode.PONG, b"p")]


def test_fragments_are_delivered_one_by_one_when_asked() -> None:
    conn = Connection(deliver_fragments=True)
    euro = "€".encode()  # split across two frames
    events = feed(
        conn,
        client_frame(Opcode.TEXT, b"a" + euro[:1], fin=False),
        client_frame(Opcode.CONTINUATION, euro[1:] + b"b", fin=False),
        client_frame(Opcode.CONTINUATION, b"c"),
        client_frame(Opcode.BINARY, b"x", fin=False),
        client_frame(Opcode.CONTINUATION, b"y"),
    )
    assert events == [
        Fragment(1, "a", False),
        Fragment(0, "€b", False),
        Fragment(0, "c", True),
        Fragment(2, b"x", False),
        Fragment(0, b"y", True),
    ]


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), min_size=1, max_size=6),
    st.lists(st.integers(1, 64), max_size=40),
)
def test_any_chunking_gives_the_same_events(messages: list[tuple[bool, bytes]], cuts: list[int]) -> None:
    stream = b""
    expected = []
    for is_text, payload in messages:
        if is_text:
            # Non-ASCII text, fragmented at a byte position that may fall
            # inside a character, with a ping between the fragments.
            text = payload.decode("latin-1")
            data = text.encode()
            half = len(data) // 2
            stream += client_frame(Opcode.TEXT, data[:half], fin=False)
            stream += client_frame(Opcode.PING, b"!")
            stream += client_frame(Opcode.CONTINUATION, data[half:])
            expected += [Ping(b"!"), Message(1, text)]
        else:
            expected.append(Message(2, payload))
            stream += client_frame(Opcode.BINARY, payload)
    conn = Connection()
    events, pos = [], 0
    for cut in cuts:
        events += receive(conn, stream[pos : pos + cut])
        pos += cut
    events += receive(conn, stream[pos:])
    assert events == expected


def test_one_byte_at_a_time() -> None:
    stream = client_frame(Opcode.TEXT, "añb€𝄞".encode() * 50) + client_frame(Opcode.BINARY, bytes(70000))
    conn = Connection()
    events = []
    for i in range(len(stream)):
        events += receive(conn, stream[i : i + 1])
    assert events == [Message(1, "añb€𝄞" * 50), Message(2, bytes(70000))]


# -- control frames and closing -------------------------------------------


def test_ping_is_answered_with_the_same_payload_and_pong_is_accepted() -> None:
    conn = Connection()
    assert feed(conn, client_frame(Opcode.PING, b"hb"), client_frame(Opcode.PONG, b"unsolicited")) == [
        Ping(b"hb"),
        Pong(b"unsolicited"),
    ]
    assert sent_frames(conn) == [(Opcode.PONG, b"hb")]
    assert conn.state is State.OPEN


def test_peer_close_is_echoed_and_closes() -> None:
    conn = Connection()
    events = feed(conn, client_frame(Opcode.CLOSE, close_payload(1000, b"bye")))
    assert events == [CloseReceived(1000, "bye")]
    assert sent_frames(conn) == [(Opcode.CLOSE, close_payload(1000))]
    assert conn.state is State.CLOSED
    assert conn.close_received == (1000, "bye")


def test_empty_close_is_answered_with_an_empty_close() -> None:
    conn = Connection()
    assert feed(conn, client_frame(Opcode.CLOSE)) == [CloseReceived(1005, "")]
    assert sent_frames(conn) == [(Opcode.CLOSE, b"")]


def test_server_initiated_close_handshake() -> None:
    conn = Connection()
    conn.send_close(1001, "going")
    assert conn.state is State.CLOSING and not conn.can_send
    assert sent_frames(conn) == [(Opcode.CLOSE, close_payload(1001, b"going"))]
    # Data still arriving before the peer's Close is delivered; pings are not answered.
    assert feed(conn, client_frame(Opcode.TEXT, b"late"), client_frame(Opcode.PING)) == [Message(1, "late"), Ping(b"")]
    assert feed(conn, client_frame(Opcode.CLOSE, close_payload(1001))) == [CloseReceived(1001, "")]
    assert sent_frames(conn) == []  # no second Close frame
    assert conn.state is State.CLOSED
    conn.send_close()  # closing twice is harmless
    assert sent_frames(conn) == []


def test_frames_after_close_are_ignored() -> None:
    conn = Connection()
    events = feed(conn, client_frame(Opcode.CLOSE, close_payload(1000)), client_frame(Opcode.TEXT, b"after"))
    assert events == [CloseReceived(1000, "")]


# -- failures: every close code path ---------------------------------------

PROTOCOL_ERRORS = {
    "unmasked": [client_frame(Opcode.TEXT, b"x", mask=None)],
    "rsv1": [client_frame(Opcode.TEXT, b"x", rsv=4)],
    "rsv2": [client_frame(Opcode.BINARY, b"x", rsv=2)],
    "rsv3": [client_frame(Opcode.PING, b"x", rsv=1)],
    "reserved data opcode": [client_frame(3, b"x")],
    "reserved control opcode": [client_frame(0xB, b"x")],
    "long control": [client_frame(Opcode.PING, b"x" * 126)],
    "fragmented control": [client_frame(Opcode.PING, b"x", fin=False)],
    "bare continuation": [client_frame(Opcode.CONTINUATION, b"x")],
    "new message inside fragmented one": [client_frame(Opcode.TEXT, b"a", fin=False), client_frame(Opcode.BINARY, b"b")],
    "close with 1 byte": [client_frame(Opcode.CLOSE, b"\x03")],
    "close with code 1005": [client_frame(Opcode.CLOSE, close_payload(1005))],
    "close with code 999": [client_frame(Opcode.CLOSE, close_payload(999))],
    "close with code 5000": [client_frame(Opcode.CLOSE, close_payload(5000))],
}


@pytest.mark.parametrize("frames", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_errors_fail_with_1002(frames: list[bytes]) -> None:
    conn = Connection()
    assert_failed(conn, feed(conn, *frames), 1002)


INVALID_TEXT = {
    "lone continuation byte": [client_frame(Opcode.TEXT, b"\x80")],
    "overlong": [client_frame(Opcode.TEXT, b"\xc0\xaf")],
    "surrogate": [client_frame(Opcode.TEXT, b"\xed\xa0\x80")],
    "above U+10FFFF": [client_frame(Opcode.TEXT, b"\xf4\x90\x80\x80")],
    "truncated at the end": [client_frame(Opcode.TEXT, b"ok\xe2\x82")],
    "truncated at the end of fragments": [client_frame(Opcode.TEXT, b"ok", fin=False), client_frame(Opcode.CONTINUATION, b"\xe2")],
    "close reason": [client_frame(Opcode.CLOSE, close_payload(1000, b"\xff"))],
}


@pytest.mark.parametrize("frames", INVALID_TEXT.values(), ids=INVALID_TEXT.keys())
def test_invalid_utf8_fails_with_1007(frames: list[bytes]) -> None:
    conn = Connection()
    assert_failed(conn, feed(conn, *frames), 1007)


@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xc0"], ids=repr)
def test_invalid_text_fails_fast_inside_a_fragment(bad: bytes) -> None:
    """The connection fails on the first certainly-invalid byte, without
    waiting for the frame or the message to end, even when the bad sequence
    is cut at a chunk boundary."""
    conn = Connection()
    assert feed(conn, client_frame(Opcode.TEXT, b"valid", fin=False)) == []
    frame = client_frame(Opcode.CONTINUATION, b"more" + bad + b"x" * 1000, fin=False)
    # Deliver only up to the bad bytes: the rest of the frame has not arrived.
    header_size = 2 + 2 + 4
    events = receive(conn, frame[: header_size + 4 + len(bad)])
    assert_failed(conn, events, 1007)


def test_valid_text_split_everywhere_does_not_fail_early() -> None:
    text = "€𝄞ñ\u07ff\uffff".encode()
    conn = Connection()
    frame = client_frame(Opcode.TEXT, text)
    events = []
    for i in range(len(frame)):
        events += receive(conn, frame[i : i + 1])
    assert events == [Message(1, text.decode())]


def test_message_over_the_limit_fails_with_1009_before_buffering() -> None:
    conn = Connection(max_message_size=1000)
    frame = client_frame(Opcode.BINARY, bytes(1001))
    # Only the header has arrived: the announced length alone fails it.
    events = receive(conn, frame[:8])
    assert_failed(conn, events, 1009)


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_the_limit_holds_for_short_whole_messages_too_and_may_change(opcode: Opcode) -> None:
    """Short whole frames take a fast path; it keeps the limit, read at each frame."""
    conn = Connection(max_message_size=20)
    assert feed(conn, client_frame(opcode, b"x" * 20)) == [Message(opcode, "x" * 20 if opcode == Opcode.TEXT else b"x" * 20)]
    conn.max_message_size = 10
    assert_failed(conn, feed(conn, client_frame(opcode, b"x" * 11)), 1009)


def test_limit_counts_the_whole_fragmented_message() -> None:
    conn = Connection(max_message_size=10)
    events = feed(conn, client_frame(Opcode.TEXT, b"123456", fin=False), client_frame(Opcode.CONTINUATION, b"78901"))
    assert_failed(conn, events, 1009)


def test_limit_is_per_frame_when_fragments_are_delivered() -> None:
    conn = Connection(max_message_size=10, deliver_fragments=True)
    events = feed(conn, client_frame(Opcode.BINARY, b"1234567890", fin=False), client_frame(Opcode.CONTINUATION, b"1234567890"))
    assert events == [Fragment(2, b"1234567890", False), Fragment(0, b"1234567890", True)]
    assert_failed(conn, feed(conn, client_frame(Opcode.BINARY, bytes(11))), 1009)


def test_no_limit() -> None:
    conn = Connection(max_message_size=None)
    assert feed(conn, client_frame(Opcode.BINARY, bytes(1 << 20))) == [Message(2, bytes(1 << 20))]


def test_events_before_a_failure_are_kept() -> None:
    conn = Connection()
    events = feed(conn, client_frame(Opcode.TEXT, b"first"), client_frame(Opcode.TEXT, b"x", mask=None))
    assert events[0] == Message(1, "first")
    assert_failed(conn, events, 1002)
