"""protocol/deflate.py and the Connection under permessage-deflate (RFC 7692).

Negotiation is table-driven, offer by offer. The codec is checked against
plain zlib playing the client, and the Connection as a driver drives it:
inflating in slices (a bomb never allocates past the limit), the framing
rules, large messages deflated a slice at a time, idle state let go.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawws import client_frame, receive
from wsserver.protocol import Connection, Failure, Fragment, HandshakeError, Message, Opcode, prepare_message
from wsserver.protocol.deflate import (
    DEFLATE_SLICE,
    MESSAGE_TAIL,
    Compression,
    DeflateJob,
    PerMessageDeflate,
    negotiate,
    parse_extensions,
)
from wsserver.protocol.frames import parse_header

DEFAULT = Compression()

# -- negotiation -----------------------------------------------------------------

NEGOTIATION = [
    # (settings, offered header values, the answer or None for declined, (server, client) windows)
    (DEFAULT, ["permessage-deflate"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    (DEFAULT, ["permessage-deflate; client_max_window_bits"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    # 7.1.2.2: without client_max_window_bits the answer would let the
    # client use 15 bits, so the offered value is named back.
    (
        DEFAULT,
        ["permessage-deflate; client_max_window_bits=10"],
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
        (12, 10),
    ),
    (
        DEFAULT,
        ["permessage-deflate; client_max_window_bits=8"],
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=8",
        (12, 9),
    ),
    (
        DEFAULT,
        ["permessage-deflate; server_no_context_takeover"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        (12, 15),
    ),
    (DEFAULT, ["permessage-deflate; client_no_context_takeover"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    (
        DEFAULT,
        ["permessage-deflate; server_max_window_bits=10"],
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        (10, 15),
    ),
    (
        DEFAULT,
        ["permessage-deflate; server_max_window_bits=15"],
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        (12, 15),
    ),
    (
        DEFAULT,
        ['permessage-deflate; server_max_window_bits="9"'],
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
        (9, 15),
    ),
    # Offers that are declined: the handshake goes on without compression.
    (DEFAULT, ["permessage-deflate; server_max_window_bits=8"], None, None),  # zlib cannot deflate with 8 bits
    (DEFAULT, ["permessage-deflate; server_max_window_bits"], None, None),
    (DEFAULT, ["permessage-deflate; server_max_window_bits=16"], None, None),
    (DEFAULT, ["permessage-deflate; server_max_window_bits=7"], None, None),
    (DEFAULT, ["permessage-deflate; server_max_window_bits=010"], None, None),
    (DEFAULT, ["permessage-deflate; client_max_window_bits=x"], None, None),
    (DEFAULT, ["permessage-deflate; server_no_context_takeover=1"], None, None),
    (DEFAULT, ["permessage-deflate; client_no_context_takeover=yes"], None, None),
    (DEFAULT, ["permessage-deflate; unknown_parameter"], None, None),
    (DEFAULT, ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None, None),
    (DEFAULT, ["permessage-deflate; client_max_window_bits; client_max_window_bits=10"], None, None),
    (DEFAULT, ["x-webkit-deflate-frame"], None, None),
    (DEFAULT, [], None, None),
    # Several offers: the first acceptable one wins.
    (
        DEFAULT,
        ["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=11, permessage-deflate"],
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=11",
        (11, 15),
    ),
    (DEFAULT, ["x-webkit-deflate-frame; no_context_takeover", "permessage-deflate"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    (DEFAULT, ["permessage-deflate; bogus, permessage-deflate"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    (DEFAULT, [" , permessage-deflate ,, "], "permessage-deflate; client_no_context_takeover", (12, 15)),
    # What the server asks for.
    (
        Compression(client_max_window_bits=9),
        ["permessage-deflate; client_max_window_bits"],
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
        (12, 9),
    ),
    (
        Compression(client_max_window_bits=11),
        ["permessage-deflate; client_max_window_bits=10"],
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=10",
        (12, 10),
    ),
    # 7.1.2.2: without client_max_window_bits in the offer the answer may not name it.
    (Compression(client_max_window_bits=9), ["permessage-deflate"], "permessage-deflate; client_no_context_takeover", (12, 15)),
    (Compression(client_no_context_takeover=False), ["permessage-deflate"], "permessage-deflate", (12, 15)),
    (
        Compression(client_no_context_takeover=False),
        ["permessage-deflate; client_no_context_takeover"],
        "permessage-deflate; client_no_context_takeover",
        (12, 15),
    ),
    (
        Compression(server_no_context_takeover=True, client_no_context_takeover=False, server_max_window_bits=15),
        ["permessage-deflate"],
        "permessage-deflate; server_no_context_takeover",
        (15, 15),
    ),
]


@pytest.mark.parametrize(("compression", "offers", "answer", "windows"), NEGOTIATION)
def test_negotiation(compression: Compression, offers: list[str], answer: str | None, windows: tuple[int, int] | None) -> None:
    agreement = negotiate(compression, offers)
    if answer is None:
        assert agreement is None
        return
    assert agreement is not None
    assert agreement.response == answer
    assert (agreement.server_window_bits, agreement.client_window_bits) == windows
    assert agreement.server_no_context_takeover == ("server_no_context_takeover" in answer)
    assert agreement.client_no_context_takeover == ("client_no_context_takeover" in answer)


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate;",
        "permessage-deflate; =10",
        "; server_no_context_takeover",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=",
        'permessage-deflate; server_max_window_bits="1 0"',
        'permessage-deflate; server_max_window_bits="10',
        "permessage-deflate; server_max_window_bits=10 11",
        "permessage-déflate",
    ],
)
def test_a_header_that_cannot_be_parsed_is_a_400(header: str) -> None:
    with pytest.raises(HandshakeError) as caught:
        negotiate(DEFAULT, [header])
    assert caught.value.status == 400


def test_the_extension_grammar() -> None:
    assert parse_extensions(['a; b=1; c="d", e', "f ;g = h"]) == [
        ("a", [("b", "1"), ("c", "d")]),
        ("e", []),
        ("f", [("g", "h")]),
    ]
    assert parse_extensions(['a; b="x\\yz"']) == [("a", [("b", "xyz")])]


@pytest.mark.parametrize(
    "options",
    [
        {"server_max_window_bits": 8},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 8},
        {"level": 10},
        {"mem_level": 0},
        {"threshold": -1},
        {"idle_timeout": 0},
    ],
)
def test_settings_out_of_range_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Compression(**options)


# -- helpers: a client made of zlib ---------------------------------------------------


def codec(compression: Compression = DEFAULT, offer: str = "permessage-deflate") -> PerMessageDeflate:
    agreement = negotiate(compression, [offer])
    assert agreement is not None
    return PerMessageDeflate(agreement)


def server(compression: Compression = DEFAULT, offer: str = "permessage-deflate", **options: Any) -> Connection:
    return Connection(deflate=codec(compression, offer), **options)


class ZlibClient:
    """The client's side of permessage-deflate, done with zlib alone."""

    def __init__(self, window_bits: int = 15, context: bool = False) -> None:
        self.window_bits = window_bits
        self.context = context
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, -window_bits)
        self.decompressor = zlib.decompressobj(-15)

    def compress(self, data: bytes) -> bytes:
        if not self.context:
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -self.window_bits)
        out = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(MESSAGE_TAIL)
        return out[:-4]

    def frame(self, opcode: int, data: bytes) -> bytes:
        return client_frame(opcode, self.compress(data), rsv=4)

    def read(self, frames: list[bytes]) -> tuple[int, bytes]:
        """Decode the server frames of one message: (opcode, payload)."""
        headers = [parse_header(f) for f in frames]
        assert all(h is not None for h in headers)
        first = headers[0]
        assert first is not None
        compressed = first.rsv1
        assert all(h is not None and not h.rsv1 for h in headers[1:]), "RSV1 only on the first frame"
        payload = b"".join(f[h.size :] for f, h in zip(frames, headers) if h is not None)
        if compressed:
            payload = self.decompressor.decompress(payload + MESSAGE_TAIL)
        return first.opcode, payload


def wire_frames(connection: Connection) -> list[bytes]:
    """What the connection queued, cut into frames."""
    data = b"".join(bytes(part) for part in connection.data_to_send())
    frames = []
    while data:
        header = parse_header(data)
        assert header is not None
        frames.append(data[: header.size + header.length])
        data = data[header.size + header.length :]
    return frames


def messages_of(frames: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    current: list[bytes] = []
    for frame in frames:
        header = parse_header(frame)
        assert header is not None
        if header.opcode >= 8:
            continue
        current.append(frame)
        if header.fin:
            out.append(current)
            current = []
    return out


JSON = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"][: i % 3]} for i in range(3000)])


# -- input -------------------------------------------------------------------------


@pytest.mark.parametrize("context", [False, True])
def test_compressed_messages_in_are_inflated(context: bool) -> None:
    compression = Compression(client_no_context_takeover=not context)
    conn = server(compression)
    client = ZlibClient(context=context)
    sent = [JSON[:100], JSON, "", "é" * 5000, JSON[:3]]
    events = receive(conn, b"".join(client.frame(Opcode.TEXT, text.encode()) for text in sent))
    events += receive(conn, client.frame(Opcode.BINARY, b"\x00\x01" * 40000))
    assert [(e.type, e.data) for e in events if isinstance(e, Message)] == [(Opcode.TEXT, t) for t in sent] + [(Opcode.BINARY, b"\x00\x01" * 40000)]
    assert conn.deflate is not None
    assert conn.deflate.holds_state is context  # without context, nothing is kept between messages


def test_uncompressed_messages_still_pass_on_a_compressing_connection() -> None:
    conn = server()
    events = receive(conn, client_frame(Opcode.TEXT, b"plain") + ZlibClient().frame(Opcode.TEXT, b"packed"))
    assert [e.data for e in events] == ["plain", "packed"]


def test_a_fragmented_compressed_message_with_a_ping_between() -> None:
    data = ZlibClient().compress(JSON.encode())
    third = len(data) // 3
    stream = (
        client_frame(Opcode.TEXT, data[:third], fin=False, rsv=4)
        + client_frame(Opcode.PING, b"between")
        + client_frame(Opcode.CONTINUATION, data[third : 2 * third], fin=False)
        + client_frame(Opcode.CONTINUATION, data[2 * third :])
    )
    conn = server()
    events = receive(conn, stream)
    assert [type(e).__name__ for e in events] == ["Ping", "Message"]
    assert events[1].data == JSON


def test_an_empty_final_frame_ends_a_compressed_message() -> None:
    data = ZlibClient().compress(b"abc" * 100)
    conn = server()
    events = receive(conn, client_frame(Opcode.BINARY, data, fin=False, rsv=4) + client_frame(Opcode.CONTINUATION, b""))
    assert [e.data for e in events] == [b"abc" * 100]


def test_on_fragment_sees_inflated_data() -> None:
    data = ZlibClient().compress(JSON.encode())
    half = len(data) // 2
    conn = server(deliver_fragments=True)
    events = receive(conn, client_frame(Opcode.TEXT, data[:half], fin=False, rsv=4) + client_frame(Opcode.CONTINUATION, data[half:]))
    assert all(isinstance(e, Fragment) for e in events) and len(events) == 2
    assert "".join(e.data for e in events) == JSON
    assert [e.fin for e in events] == [False, True]


def test_a_large_message_is_inflated_a_slice_per_call() -> None:
    text = (JSON * 4).encode()  # about 480 KiB
    big = text * 8  # about 3.8 MiB, compressed to much less
    conn = server()
    conn.receive_data(ZlibClient().frame(Opcode.BINARY, big))
    steps = 0
    while (event := conn.next_event()) is None:
        assert conn.work_pending, "no more input is needed: each None is a slice done"
        steps += 1
    assert isinstance(event, Message) and event.data == big
    assert steps >= len(big) // (256 * 1024) - 1
    assert not conn.work_pending and conn.buffered_input == 0


def test_a_decompression_bomb_fails_at_the_limit_without_allocating_past_it() -> None:
    limit = 1024 * 1024
    bomb = ZlibClient().frame(Opcode.BINARY, bytes(64 * 1024 * 1024))  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100 * 1024
    conn = server(max_message_size=limit)
    tracemalloc.start()
    try:
        events = receive(conn, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(events[-1], Failure) and events[-1].code == 1009
    assert peak < 3 * limit, f"inflating allocated {peak} bytes for a {limit}-byte limit"


def test_a_message_at_the_limit_once_inflated_passes() -> None:
    conn = server(max_message_size=100_000)
    events = receive(conn, ZlibClient().frame(Opcode.BINARY, bytes(100_000)))
    assert isinstance(events[0], Message) and len(events[0].data) == 100_000
    events = receive(conn, ZlibClient().frame(Opcode.BINARY, bytes(100_001)))
    assert isinstance(events[0], Failure) and events[0].code == 1009


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.CONTINUATION, ZlibClient().compress(b"b"), rsv=4), 1002),
        (client_frame(Opcode.PING, b"", rsv=4), 1002),
        (client_frame(Opcode.TEXT, b"\xff\xff\xff not deflate", rsv=4), 1002),
        (client_frame(Opcode.TEXT, ZlibClient().compress(b"\xc3("), rsv=4), 1007),
        (client_frame(Opcode.TEXT, ZlibClient().compress(b"ok \xc3"), rsv=4), 1007),
        (client_frame(Opcode.TEXT, b"", rsv=2), 1002),
    ],
    ids=["rsv1-on-continuation", "rsv1-on-ping", "not-deflate", "bad-utf8", "truncated-utf8", "rsv2"],
)
def test_broken_compressed_input_fails_with_the_right_code(stream: bytes, code: int) -> None:
    events = receive(server(), stream)
    assert isinstance(events[-1], Failure) and events[-1].code == code


def test_rsv1_without_the_extension_is_still_a_protocol_error() -> None:
    events = receive(Connection(), ZlibClient().frame(Opcode.TEXT, b"x"))
    assert isinstance(events[-1], Failure) and events[-1].code == 1002


def test_a_released_decompressor_keeps_the_clients_window() -> None:
    # Client context takeover: a message may refer to the one before it,
    # even after the server let its zlib state go in between.
    conn = server(Compression(client_no_context_takeover=False))
    client = ZlibClient(context=True)
    first = json.dumps({"greeting": "hello, this is a sentence that the next message repeats"}).encode()
    assert [e.data for e in receive(conn, client.frame(Opcode.TEXT, first))] == [first.decode()]
    assert conn.deflate is not None and conn.deflate.holds_state
    conn.deflate.release()
    assert not conn.deflate.holds_state
    second = client.compress(first)
    assert len(second) < len(first) // 3, "the client referred back to the first message"
    assert [e.data for e in receive(conn, client_frame(Opcode.TEXT, second, rsv=4))] == [first.decode()]


# -- output ------------------------------------------------------------------------


def test_messages_over_the_threshold_go_out_compressed_and_small_ones_do_not() -> None:
    conn = server(Compression(threshold=100))
    client = ZlibClient()
    conn.send_text("x" * 99)
    conn.send_text(JSON[:1000])
    conn.send_binary(b"")
    frames = wire_frames(conn)
    assert [parse_header(f).rsv1 for f in frames] == [False, True, False]  # type: ignore[union-attr]
    assert [client.read([f]) for f in frames] == [(1, b"x" * 99), (1, JSON[:1000].encode()), (2, b"")]


def test_context_takeover_makes_repeated_messages_small() -> None:
    conn = server()
    message = JSON[:400]
    conn.send_text(message)
    conn.send_text(message)
    first, second = wire_frames(conn)
    assert len(second) < len(first) // 4
    client = ZlibClient()
    assert [client.read([f])[1] for f in (first, second)] == [message.encode()] * 2


def test_an_empty_message_compresses_to_one_byte() -> None:
    conn = server(Compression(threshold=0))
    conn.send_text("")
    (frame,) = wire_frames(conn)
    assert frame[0] == 0xC1 and frame[2:] == b"\x00"  # RFC 7692 section 7.2.3.6


def test_a_large_message_is_deflated_a_slice_per_call_and_what_follows_waits() -> None:
    text = JSON * 3
    conn = server()
    conn.send_text(text)
    conn.send_text("after")
    assert conn.compressing and conn.held_size >= len(text)
    frames = wire_frames(conn)
    calls = 0
    while conn.compressing:
        conn.send_more()
        frames += wire_frames(conn)
        calls += 1
    assert calls >= len(text) // DEFLATE_SLICE - 1
    assert conn.held_size == 0
    big, after = messages_of(frames)
    client = ZlibClient()
    assert client.read(big) == (Opcode.TEXT, text.encode())
    assert client.read(after) == (Opcode.TEXT, b"after")
    assert len(big) > 1 and parse_header(big[0]).opcode == Opcode.TEXT  # type: ignore[union-attr]


def test_a_ping_may_go_between_the_slices_and_a_raw_data_frame_waits_for_the_end() -> None:
    conn = server()
    conn.send_text(JSON * 3)
    conn.send_ping(b"hb")
    conn.send_frame(Opcode.BINARY, b"raw")
    assert not conn.compressing
    frames = wire_frames(conn)
    opcodes = [parse_header(f).opcode for f in frames]  # type: ignore[union-attr]
    assert opcodes.index(Opcode.PING) < len(opcodes) - 2 and opcodes[-1] == Opcode.BINARY
    client = ZlibClient()
    big, raw = messages_of(frames)
    assert client.read(big) == (Opcode.TEXT, (JSON * 3).encode())
    assert client.read(raw) == (Opcode.BINARY, b"raw")


def test_a_raw_rsv1_frame_is_refused_on_a_compressing_connection_only() -> None:
    conn = server()
    with pytest.raises(ValueError, match="RSV1"):
        conn.send_frame(Opcode.TEXT, b"x", rsv1=True)
    plain = Connection()
    plain.send_frame(Opcode.TEXT, b"x", rsv1=True)
    assert plain.data_to_send()[0][0] == 0xC1


def test_without_context_a_broadcast_is_compressed_once() -> None:
    compression = Compression(server_no_context_takeover=True)
    small, large = prepare_message(JSON[:1000]), prepare_message(JSON * 3)
    connections = [server(compression) for _ in range(3)]
    for conn in connections:
        conn.send_prepared(small)
        assert small.deflated is not None
        (shared_small,) = small.deflated.values()
        assert conn.data_to_send()[0] is shared_small[0]  # the same bytes, not a copy
        conn.send_prepared(large)
    assert large.deflated is not None
    (job,) = large.deflated.values()
    assert isinstance(job, DeflateJob)
    outputs = []
    for conn in connections:
        while conn.compressing:
            conn.send_more()
        frames = wire_frames(conn)
        outputs.append(frames)
        client = ZlibClient()
        assert [client.read(m) for m in messages_of(frames)] == [(1, (JSON * 3).encode())]
    assert job.done and outputs[0] == outputs[1] == outputs[2]


def test_with_context_each_connection_compresses_on_its_own() -> None:
    message = prepare_message(JSON[:1000])
    a, b = server(), server()
    a.send_prepared(message)
    b.send_prepared(message)
    assert message.deflated is None


def test_a_released_compressor_starts_afresh_and_the_client_still_reads_it() -> None:
    conn = server()
    client = ZlibClient()
    message = JSON[:500]
    conn.send_text(message)
    assert conn.deflate is not None and conn.deflate.holds_state
    conn.deflate.release()
    assert not conn.deflate.holds_state
    conn.send_text(message)
    assert [client.read([f])[1] for f in wire_frames(conn)] == [message.encode()] * 2


def test_closing_lets_the_zlib_state_go() -> None:
    conn = server(Compression(client_no_context_takeover=False))
    receive(conn, ZlibClient().frame(Opcode.TEXT, b"x" * 200))
    conn.send_text("y" * 200)
    assert conn.deflate is not None and conn.deflate.holds_state
    conn.fail(1000)
    assert not conn.deflate.holds_state


# -- fuzzing -------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    payloads=st.lists(
        st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: ZlibClient().compress(b))),
        min_size=1,
        max_size=4,
    ),
    rsv1=st.lists(st.booleans(), min_size=4, max_size=4),
    fin=st.lists(st.booleans(), min_size=4, max_size=4),
    opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    cut=st.integers(1, 50),
)
def test_fuzzed_compressed_frames_end_in_events_or_one_failure(
    payloads: list[bytes], rsv1: list[bool], fin: list[bool], opcode: int, cut: int
) -> None:
    stream = b""
    for i, payload in enumerate(payloads):
        stream += client_frame(opcode if i == 0 else Opcode.CONTINUATION, payload, fin=fin[i], rsv=4 if rsv1[i] else 0)
    conn = server(max_message_size=4096)
    events = []
    for start in range(0, len(stream), cut):
        events += receive(conn, stream[start : start + cut])  # raises nothing but the protocol's own failures
    failures = [e for e in events if isinstance(e, Failure)]
    assert len(failures) <= 1 and (not failures or events[-1] is failures[0])
    assert all(f.code in (1002, 1007, 1009) for f in failures)


def test_a_small_frame_that_inflates_past_a_slice_goes_on_a_slice_per_call() -> None:
    data = bytes(3 * 1024 * 1024)  # compresses to about 3 KiB: one small whole frame
    frame = ZlibClient().frame(Opcode.BINARY, data)
    assert len(frame) < 4096
    conn = server()
    conn.receive_data(frame)
    steps = 0
    while (event := conn.next_event()) is None:
        assert conn.work_pending
        steps += 1
    assert isinstance(event, Message) and event.data == data and steps >= 10
    conn = server(max_message_size=1024 * 1024)
    events = receive(conn, frame)
    assert isinstance(events[-1], Failure) and events[-1].code == 1009


def test_a_close_waits_for_the_message_being_compressed_and_those_behind_it() -> None:
    conn = server()
    conn.send_text(JSON * 3)
    conn.send_text("after")
    conn.send_close(1000, "bye")
    assert not conn.can_send and conn.compressing
    while conn.compressing:
        conn.send_more()
    frames = wire_frames(conn)
    client = ZlibClient()
    big, after = messages_of(frames)
    assert client.read(big) == (Opcode.TEXT, (JSON * 3).encode()) and client.read(after) == (Opcode.TEXT, b"after")
    assert frames[-1][0] == 0x88 and frames[-1][2:] == b"\x03\xe8bye"


def test_the_answer_to_a_clients_close_follows_the_message_being_compressed() -> None:
    conn = server()
    conn.send_text(JSON * 3)
    events = receive(conn, client_frame(Opcode.CLOSE, b"\x03\xe8"))
    assert type(events[-1]).__name__ == "CloseReceived"
    assert conn.state.value == "closing" and conn.compressing
    assert receive(conn, client_frame(Opcode.TEXT, b"ignored")) == []  # nothing after a Close is read
    while conn.compressing:
        conn.send_more()
    frames = wire_frames(conn)
    assert ZlibClient().read(messages_of(frames)[0]) == (Opcode.TEXT, (JSON * 3).encode())
    assert frames[-1] == b"\x88\x02\x03\xe8"
    assert conn.state.value == "closed"


def test_a_failure_while_a_close_waits_sends_the_failures_code() -> None:
    conn = server()
    conn.send_text(JSON * 3)
    conn.send_close(1000)
    wire_frames(conn)
    events = receive(conn, client_frame(Opcode.TEXT, b"x", mask=None))
    assert isinstance(events[-1], Failure)
    (close,) = wire_frames(conn)
    assert close[0] == 0x88 and close[2:4] == b"\x03\xea"  # 1002, not the 1000 that waited
    assert conn.state.value == "closed" and not conn.compressing


def test_an_idle_release_keeps_a_decompressor_in_the_middle_of_a_message() -> None:
    data = ZlibClient().compress(JSON.encode())
    half = len(data) // 2
    for context in (False, True):
        conn = server(Compression(client_no_context_takeover=not context))
        assert receive(conn, client_frame(Opcode.TEXT, data[:half], fin=False, rsv=4)) == []
        conn.release_idle_state()  # the driver found the client idle between two fragments
        assert conn.deflate is not None and conn.deflate.holds_state
        events = receive(conn, client_frame(Opcode.CONTINUATION, data[half:]))
        assert [e.data for e in events] == [JSON]
        conn.release_idle_state()
        assert not conn.deflate.holds_state  # between messages it goes (with context, its window is kept as bytes)


def test_data_after_a_final_block_is_ignored_however_it_arrives() -> None:
    def finished(data: bytes) -> bytes:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)

    frame = client_frame(Opcode.TEXT, finished(b"hello ") + ZlibClient().compress(b"world"), rsv=4)
    whole = receive(server(), frame)
    conn = server()
    bytewise = [event for i in range(len(frame)) for event in receive(conn, frame[i : i + 1])]
    assert [e.data for e in whole] == [e.data for e in bytewise] == ["hello "]
    # and the stream goes on with the next message
    assert [e.data for e in receive(conn, ZlibClient().frame(Opcode.TEXT, b"next"))] == ["next"]
