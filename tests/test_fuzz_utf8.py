"""Property tests of the UTF-8 path: text messages and close reasons made
of random bytes, cut into random fragments and random reads.

The reference is Python's strict UTF-8 codec (RFC 3629: no surrogates, no
overlong forms, nothing above U+10FFFF). Valid text arrives whole and equal;
anything else fails the connection with 1007, never with another code or an
exception, and never after a message made of the bad bytes was delivered.
"""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rawws import client_frame, receive
from wsserver.protocol import Connection, Failure, Fragment, Message
from wsserver.protocol.events import CloseReceived

SETTINGS = settings(max_examples=400, deadline=None)

# Byte strings near the edges of UTF-8: valid text, text with a byte
# changed, lone continuation bytes, surrogates, overlong forms, 4-byte
# sequences above U+10FFFF, and sequences cut short.
tricky = st.sampled_from([
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\x9f\xbf", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
    b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf5\x80\x80\x80", b"\x80", b"\xbf", b"\xfe", b"\xff",
    b"\xc2", b"\xe2\x82", b"\xf0\x9f\x98", "\U0001f600".encode(), "\u20ac".encode(), b"\xef\xbb\xbf",
])
payloads = st.one_of(
    st.text(max_size=80).map(str.encode),
    st.lists(st.one_of(tricky, st.text(max_size=5).map(str.encode)), max_size=12).map(b"".join),
    st.binary(max_size=80),
)


def valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def text_message(pieces: list[bytes]) -> bytes:
    """``pieces`` as one fragmented text message: a text frame, then continuations."""
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(client_frame(1 if i == 0 else 0, piece, fin=i == len(pieces) - 1))
    return b"".join(frames)


@SETTINGS
@given(payloads, st.lists(st.integers(0, 200), max_size=5), st.lists(st.integers(0, 400), max_size=8), st.booleans())
@example("\U0001f600".encode(), [1, 2, 3], [7, 8, 9, 10], False)
@example(b"ok\xed\xa0\x80", [3], [], False)
def test_text_is_delivered_iff_it_is_valid_utf8(payload, fragment_cuts, read_cuts, deliver_fragments):
    wire = text_message(cut(payload, fragment_cuts)) + client_frame(1, b"after")
    connection = Connection(None, deliver_fragments=deliver_fragments)
    events = []
    for chunk in cut(wire, read_cuts):
        events += receive(connection, chunk)
    if valid_utf8(payload):
        assert not [e for e in events if isinstance(e, Failure)]
        if deliver_fragments:
            texts = [e.data for e in events if isinstance(e, Fragment)]
            assert "".join(texts) == payload.decode() + "after"
        else:
            assert [e.data for e in events if isinstance(e, Message)] == [payload.decode(), "after"]
    else:
        assert isinstance(events[-1], Failure) and events[-1].code == 1007
        assert not [e for e in events if isinstance(e, Message)]
        if deliver_fragments:
            # What was delivered is a valid prefix of the text, never a bad byte.
            delivered = "".join(e.data for e in events if isinstance(e, Fragment)).encode()
            assert payload.startswith(delivered)


@SETTINGS
@given(payloads, st.sampled_from([1000, 1001, 3000, 4999]), st.lists(st.integers(0, 200), max_size=4))
def test_close_reason_is_accepted_iff_it_is_valid_utf8(reason, code, read_cuts):
    reason = reason[:123]
    connection = Connection()
    events = []
    for chunk in cut(client_frame(8, struct.pack("!H", code) + reason), read_cuts):
        events += receive(connection, chunk)
    if valid_utf8(reason):
        assert events == [CloseReceived(code, reason.decode())]
    else:
        assert events == [Failure(1007, "close reason is not valid UTF-8")]


@SETTINGS
@given(payloads, st.lists(st.integers(0, 200), max_size=5))
@example(b"abc\xed\xa0\x80def", [4])
def test_invalid_text_fails_as_soon_as_the_bad_byte_arrives(payload, read_cuts):
    """Not at the end of the message: the bytes up to the first one that
    cannot continue valid UTF-8 are enough."""
    try:
        payload.decode("utf-8")
        return
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return  # a sequence cut short by the end: only the end can tell
        # A bad lead byte is the last one of exc.start:exc.end; a bad
        # continuation byte is the one right after that range.
        seen = payload[: exc.end + (exc.reason == "invalid continuation byte")]
    frame = client_frame(1, payload + b"padding that never arrives")
    header_size = len(frame) - len(payload) - len("padding that never arrives")
    connection = Connection(None)
    events = []
    for chunk in cut(frame[: header_size + len(seen)], read_cuts):
        events += receive(connection, chunk)
    assert events and isinstance(events[-1], Failure) and events[-1].code == 1007
