"""The data hot paths stay correct where they were made fast: writes gathered
per readiness event, bulk masking, and the copy-free paths of
``Connection.receive_data``."""

from __future__ import annotations

import select
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DEADLINE
from rawws import client_frame, receive
from wsserver.protocol import BufferPool, Connection, Failure, Fragment, Message, Ping, prepare_message
from wsserver.protocol.frames import _SMALL_MASK_LIMIT, _UNMASK_SLICE, AsciiText, Opcode, apply_mask, masked_copy, unmask_into
from wsserver.reactor import Reactor, Stream

# -- writes gathered per readiness event --------------------------------------


class CountingSocket(socket.socket):
    """A real socket that counts its ``send`` calls."""

    sends = 0

    def send(self, data, flags=0):  # type: ignore[override]
        self.sends += 1
        return super().send(data, flags)


class Replier:
    """A StreamHandler that answers each chunk with ``replies(data)``."""

    def __init__(self, replies) -> None:
        self.replies = replies
        self.stream: Stream | None = None

    def data_received(self, data: memoryview) -> None:
        assert self.stream is not None
        self.replies(self.stream, bytes(data))

    def eof_received(self) -> None:
        pass

    def write_drained(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


@pytest.fixture
def reactor() -> Reactor:
    r = Reactor()
    yield r
    r.close()


def counted_pair(reactor: Reactor, replies) -> tuple[Stream, CountingSocket, socket.socket]:
    a, theirs = socket.socketpair()
    ours = CountingSocket(a.family, a.type, a.proto, fileno=a.detach())
    ours.setblocking(False)
    handler = Replier(replies)
    stream = Stream(reactor, ours, handler)
    handler.stream = stream
    return stream, ours, theirs


def read_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(DEADLINE)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "peer closed"
        data += chunk
    return data


def pump(reactor: Reactor, condition) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.poll(0.01)


def test_the_replies_to_one_read_leave_in_one_send(reactor: Reactor) -> None:
    def fifty_replies(stream: Stream, data: bytes) -> None:
        for i in range(50):
            stream.write(b"%02d:" % i, data)

    stream, ours, theirs = counted_pair(reactor, fifty_replies)
    theirs.sendall(b"ping")
    pump(reactor, lambda: ours.sends > 0 and stream.buffered_amount == 0)
    expected = b"".join(b"%02d:ping" % i for i in range(50))
    assert read_exactly(theirs, len(expected)) == expected
    assert ours.sends == 1
    assert stream.buffered_amount == 0
    theirs.close()


def test_a_batch_reaching_the_low_water_mark_is_sent_during_the_event(reactor: Reactor) -> None:
    """Gathering holds back at most ``low_water`` bytes: past it the kernel
    takes what it can at once, before the queue counts against limits."""
    sends_inside = []

    def big_batch(stream: Stream, data: bytes) -> None:
        for _ in range(4):
            stream.write(b"x" * 1000)
        sends_inside.append(ours.sends)  # 4000 bytes, under the mark: held
        stream.write(b"y" * stream.low_water)
        sends_inside.append(ours.sends)

    stream, ours, theirs = counted_pair(reactor, big_batch)
    stream.low_water = 8192
    theirs.sendall(b"go")
    pump(reactor, lambda: sends_inside and stream.buffered_amount == 0)
    assert sends_inside == [0, 1]
    assert read_exactly(theirs, 4000 + 8192) == b"x" * 4000 + b"y" * 8192
    theirs.close()


def test_a_write_outside_poll_is_sent_at_once(reactor: Reactor) -> None:
    stream, ours, theirs = counted_pair(reactor, lambda stream, data: None)
    stream.write(b"now")
    assert ours.sends == 1 and stream.buffered_amount == 0
    assert read_exactly(theirs, 3) == b"now"  # no poll in between
    theirs.close()


def test_poll_from_a_callback_first_sends_what_the_callback_wrote(reactor: Reactor) -> None:
    seen_by_peer = []

    def write_then_poll(stream: Stream, data: bytes) -> None:
        stream.write(b"before")
        reactor.poll(0)  # as Server.stop() does from a callback
        seen_by_peer.append(select.select([theirs], [], [], DEADLINE)[0] == [theirs])
        stream.write(b"after")

    stream, ours, theirs = counted_pair(reactor, write_then_poll)
    theirs.sendall(b"go")
    pump(reactor, lambda: seen_by_peer)
    assert seen_by_peer == [True]
    assert read_exactly(theirs, 11) == b"beforeafter"
    theirs.close()


def test_a_large_reply_still_goes_out_in_slices_in_order(reactor: Reactor) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, eight write slices

    def big_reply(stream: Stream, data: bytes) -> None:
        stream.write(b"head", payload, b"tail")

    stream, ours, theirs = counted_pair(reactor, big_reply)
    theirs.sendall(b"go")
    received = bytearray()
    theirs.setblocking(False)
    deadline = time.monotonic() + DEADLINE
    while len(received) < len(payload) + 8:
        assert time.monotonic() < deadline
        reactor.poll(0.01)
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            pass
    assert received == b"head" + payload + b"tail"
    assert ours.sends > 1  # one slice per send
    theirs.close()


@pytest.mark.parametrize("seed", range(3))
def test_gathered_writes_survive_partial_sends_in_order(reactor: Reactor, seed: int) -> None:
    """Buffers of every size, gathered in one event and then past the
    low-water mark, through a small kernel buffer: the peer gets exactly
    their concatenation."""
    import random

    rng = random.Random(seed)
    parts: list = [bytes([i & 0xFF]) * rng.choice([1, 7, 100, 5000, 70000, 300000]) for i in range(300)]
    # Some parts are LazyBytes: large ASCII text encoded as it is sent.
    for i in range(0, 300, 20):
        parts[i] = AsciiText(chr(0x41 + i % 26) * rng.choice([70000, 300000, 600000]))

    def all_parts(stream: Stream, data: bytes) -> None:
        stream.write(*parts[:150])
        for part in parts[150:]:
            stream.write(part)

    stream, ours, theirs = counted_pair(reactor, all_parts)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.sendall(b"go")
    expected = b"".join(bytes(p) for p in parts)
    received = bytearray()
    theirs.setblocking(False)
    deadline = time.monotonic() + DEADLINE
    while len(received) < len(expected):
        assert time.monotonic() < deadline
        reactor.poll(0.001)
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            pass
    assert received == expected
    assert stream.buffered_amount == 0
    theirs.close()


# -- bulk masking --------------------------------------------------------------


def naive_mask(data: bytes, mask: bytes, offset: int) -> bytes:
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


# Sizes on both sides of the switch from the integer XOR to translate.
SIZES = st.one_of(st.integers(0, 16), st.integers(_SMALL_MASK_LIMIT - 8, _SMALL_MASK_LIMIT + 8), st.integers(0, 5000))


# The unmasking tests run once per way of unmasking (pure Python, numpy); the
# monkeypatched choice holds for every example of a test.
def each_unmasker_settings(max_examples: int = 100) -> settings:
    return settings(max_examples=max_examples, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


EACH_UNMASKER = each_unmasker_settings()


@EACH_UNMASKER
@given(SIZES, st.binary(min_size=4, max_size=4), st.integers(0, 11), st.sampled_from([bytes, bytearray, memoryview]))
def test_masked_copy_matches_the_definition_at_every_offset_and_size(each_unmasker, size: int, mask: bytes, offset: int, kind) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    source = kind(bytearray(data)) if kind is memoryview else kind(data)
    out = masked_copy(source, mask, offset)
    assert out == naive_mask(data, mask, offset)
    assert isinstance(out, (bytes, bytearray)) and (out is not source or size == 0)
    assert type(apply_mask(source, mask, offset)) is bytes
    assert bytes(source) == data  # the input is never changed


def test_masked_copy_never_aliases_the_callers_buffer() -> None:
    """Unmasked pieces outlive the reactor's read buffer they came from."""
    buffer = bytearray(range(256)) * 8
    out = masked_copy(memoryview(buffer)[16:2000], b"abcd", 16)
    expected = bytes(out)
    buffer[:] = bytes(len(buffer))
    assert out == expected


@EACH_UNMASKER
@given(
    st.one_of(st.integers(0, 9), st.integers(_SMALL_MASK_LIMIT - 4, _SMALL_MASK_LIMIT + 4), st.integers(0, 3 * _UNMASK_SLICE)),
    st.integers(0, 7),
    st.integers(0, 7),
    st.integers(0, 100),
)
def test_unmask_into_writes_the_unmasked_piece_at_its_place(each_unmasker, size: int, start: int, offset: int, stale: int) -> None:
    """Into a buffer longer than needed (a reused one, with stale bytes
    after the piece, which stay) or shorter (it grows)."""
    mask = b"\x01\x80\xfe\x37"
    data = bytes((i * 13 + 5) & 0xFF for i in range(size))
    buffer = bytearray(b"\xaa" * (start + stale))
    end = unmask_into(buffer, start, memoryview(data), mask, offset)
    assert end == start + size
    assert bytes(buffer[start:end]) == naive_mask(data, mask, offset)
    assert bytes(buffer[:start]) == b"\xaa" * start
    assert bytes(buffer[end:]) == b"\xaa" * max(0, start + stale - end)


# -- Connection.receive_data: chunks processed where they lie -------------------


def frames_of(messages: list[tuple[int, bytes, int]]) -> tuple[bytes, list]:
    """Client frames for ``(opcode, payload, pieces)`` messages (pieces > 1:
    fragmented, with a ping between fragments), and the events expected."""
    stream, expected = b"", []
    for opcode, payload, pieces in messages:
        step = max(1, -(-len(payload) // pieces))
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        for i, chunk in enumerate(chunks):
            stream += client_frame(opcode if i == 0 else Opcode.CONTINUATION, chunk, fin=i == len(chunks) - 1)
            if i == 0 and len(chunks) > 1:
                stream += client_frame(Opcode.PING, b"p")
                expected.append(("ping", b"p"))
        expected.append((opcode, payload.decode() if opcode == Opcode.TEXT else payload))
    return stream, expected


def events_of(events: list) -> list:
    out = []
    for event in events:
        if isinstance(event, Message):
            assert type(event.data) is (str if event.type == Opcode.TEXT else bytes)
            out.append((event.type, event.data))
        elif isinstance(event, Ping):
            out.append(("ping", event.data))
        else:  # pragma: no cover - shows what went wrong
            out.append(event)
    return out


MESSAGES = st.lists(
    st.tuples(
        st.sampled_from([Opcode.BINARY, Opcode.TEXT]),
        st.one_of(st.binary(max_size=40), st.binary(min_size=500, max_size=3000)),
        st.integers(1, 3),
    ).map(lambda m: (m[0], m[1].hex().encode() if m[0] == Opcode.TEXT else m[1], m[2])),
    min_size=1,
    max_size=6,
)


@each_unmasker_settings(max_examples=200)
@given(MESSAGES, st.lists(st.integers(1, 4000), max_size=12), st.sampled_from([bytes, memoryview]))
def test_chunk_splits_give_the_same_events_from_any_buffer_type(each_unmasker, messages, cuts, kind) -> None:
    stream, expected = frames_of(messages)
    conn = Connection(max_message_size=None)
    got, pos = [], 0
    for cut in cuts + [len(stream)]:
        piece = stream[pos : pos + cut]
        if kind is memoryview:
            # The reactor's case: a view of a reused buffer that is
            # overwritten after the call.
            scratch = bytearray(piece)
            got += receive(conn, memoryview(scratch))
            scratch[:] = bytes(len(scratch))
        else:
            got += receive(conn, piece)
        pos += len(piece)
    assert events_of(got) == expected


def test_a_large_frame_in_reactor_sized_chunks_is_one_message_of_bytes(each_unmasker) -> None:
    payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4, masked at odd offsets
    stream = client_frame(Opcode.BINARY, payload) + client_frame(Opcode.TEXT, "é✓".encode() * 1000)
    conn = Connection(max_message_size=None)
    events = []
    for i in range(0, len(stream), 65537):
        events += receive(conn, memoryview(stream)[i : i + 65537])
    assert events_of(events) == [(Opcode.BINARY, payload), (Opcode.TEXT, "é✓" * 1000)]


def test_fragments_delivered_one_by_one_are_bytes() -> None:
    conn = Connection(max_message_size=None, deliver_fragments=True)
    big = bytes(range(256)) * 10
    events = receive(conn, client_frame(Opcode.BINARY, big, fin=False) + client_frame(Opcode.CONTINUATION, b"end"))
    assert [(type(e), e.data, e.fin) for e in events] == [(Fragment, big, False), (Fragment, b"end", True)]
    assert all(type(e.data) is bytes for e in events)


def test_an_incomplete_header_at_a_chunk_end_is_kept_for_the_next() -> None:
    frame = client_frame(Opcode.BINARY, b"x" * 70000)  # a 14-byte header
    conn = Connection(max_message_size=None)
    for cut in range(1, 14):
        conn = Connection(max_message_size=None)
        assert receive(conn, memoryview(frame)[:cut]) == []
        events = receive(conn, memoryview(frame)[cut:])
        assert events_of(events) == [(Opcode.BINARY, b"x" * 70000)]


# -- incremental UTF-8: the same verdict, at the same chunk, as the stdlib's decoder


def reference_failure_chunk(chunks: list[bytes]) -> int | None:
    """The chunk at which codecs' IncrementalDecoder (with the surrogate
    check at chunk ends) knows the text is invalid; len(chunks) if only the
    end shows it; None if it is valid."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    for i, chunk in enumerate(chunks):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return i
        pending = decoder.getstate()[0]
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            return i
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return len(chunks)
    return None


UTF8_PIECES = st.lists(
    st.one_of(
        st.text(max_size=5).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80", b"\xf0\x9f", b"\xff"]),
    ),
    max_size=12,
)


def failures(events: list) -> bool:
    return any(isinstance(e, Failure) for e in events)


@each_unmasker_settings(max_examples=300)
@given(UTF8_PIECES, st.lists(st.integers(1, 6), max_size=8), st.booleans())
def test_text_fails_at_the_same_chunk_as_the_stdlib_decoder(each_unmasker, pieces, cuts, fragmented) -> None:
    text = b"".join(pieces)
    chunks, pos = [], 0
    for cut in cuts + [len(text)]:
        chunks.append(text[pos : pos + cut])
        pos += cut
    chunks = [c for c in chunks if c] or [b""]
    expected = reference_failure_chunk(chunks)
    if expected == len(chunks):
        expected -= 1  # the message ends with its last chunk: that is where it fails
    if fragmented:
        # One frame per chunk: frame boundaries change nothing.
        last = len(chunks) - 1
        inputs = [client_frame(Opcode.TEXT if i == 0 else Opcode.CONTINUATION, c, fin=i == last) for i, c in enumerate(chunks)]
    else:
        frame = client_frame(Opcode.TEXT, text)
        header_size = len(frame) - len(text)
        inputs, pos = [], header_size
        for chunk in chunks:
            inputs.append(memoryview(frame)[pos : pos + len(chunk)])
            pos += len(chunk)
        inputs[0] = frame[: header_size + len(chunks[0])]
    conn = Connection(max_message_size=None)
    failed_at = next((i for i, data in enumerate(inputs) if failures(receive(conn, data))), None)
    assert failed_at == expected


@pytest.mark.parametrize("bad", [None, b"\xff", b"\xed\xa0\x80"], ids=["valid", "invalid byte", "surrogate"])
def test_a_sequence_across_a_validation_slice_edge_is_judged_whole(bad: bytes | None) -> None:
    """Text is checked in slices of _UNMASK_SLICE bytes inside one piece: a
    character cut by a slice's edge is valid, and a bad one there fails."""
    char = "✓".encode()  # 3 bytes: the edge cuts it after its first byte
    text = b"a" * (_UNMASK_SLICE - 1) + (bad or char) + b"b" * 100
    conn = Connection(max_message_size=None)
    events = receive(conn, client_frame(Opcode.TEXT, text))
    if bad is None:
        assert events_of(events) == [(Opcode.TEXT, text.decode())]
    else:
        assert [(type(e), e.code) for e in events] == [(Failure, 1007)]


def test_invalid_text_fails_in_the_piece_it_arrives_in_long_before_the_frame_ends() -> None:
    text = b"a" * 300_000 + b"\xff" + b"a" * 700_000
    frame = client_frame(Opcode.TEXT, text)
    conn = Connection(max_message_size=None)
    assert receive(conn, memoryview(frame)[:250_000]) == []
    assert [(type(e), e.code) for e in receive(conn, memoryview(frame)[250_000:400_000])] == [(Failure, 1007)]


# -- message buffers: shared, reused, and never held by an idle connection -------


def test_an_idle_connection_holds_no_message_buffer_and_the_next_message_reuses_it() -> None:
    pool = BufferPool()
    first, second = Connection(max_message_size=None, buffers=pool), Connection(max_message_size=None, buffers=pool)
    payload = bytes(range(256)) * 1024
    assert events_of(receive(first, client_frame(Opcode.BINARY, payload))) == [(Opcode.BINARY, payload)]
    assert first._buffer is None and pool.held >= len(payload)
    kept = pool._free[-1]
    # Another connection's message of another type goes into the same memory.
    text = "é✓ text " * 10_000
    assert events_of(receive(second, client_frame(Opcode.TEXT, text.encode()))) == [(Opcode.TEXT, text)]
    assert second._buffer is None and pool._free == [kept]
    # Small whole messages never take a buffer.
    receive(first, client_frame(Opcode.BINARY, b"small"))
    assert pool._free == [kept]


def test_a_message_under_way_keeps_its_buffer_and_a_failure_returns_it() -> None:
    pool = BufferPool()
    conn = Connection(max_message_size=None, buffers=pool)
    frame = client_frame(Opcode.TEXT, b"x" * 100_000)
    receive(conn, memoryview(frame)[:50_000])
    assert conn._buffer is not None and pool.held == 0
    receive(conn, client_frame(Opcode.BINARY, b"new message inside a fragmented one"))  # a protocol error
    assert conn._buffer is None and pool.held > 0


def test_the_pool_keeps_at_most_its_count_and_bytes() -> None:
    pool = BufferPool(max_bytes=1000, max_buffers=2)
    pool.give(bytearray(600))
    pool.give(bytearray(600))  # over max_bytes: let go
    pool.give(bytearray(100))
    pool.give(bytearray(100))  # over max_buffers: let go
    assert pool.held == 700 and len(pool._free) == 2
    assert len(pool.take()) == 100 and pool.held == 600
    assert len(pool.take()) == 600 and pool.held == 0
    assert pool.take() == bytearray()


# -- frame building --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([0, 1, 2, 8, 9, 10]),
    st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 65537, 70000]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_encode_frame_round_trips_every_flag_and_length_encoding(opcode, length, fin, rsv1, rsv2, rsv3) -> None:
    from wsserver.protocol.frames import encode_frame, parse_header

    if opcode >= 8 and (length > 125 or not fin):
        return  # not a valid control frame; parse_header would refuse it
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    parts = encode_frame(Opcode(opcode), payload, fin, rsv1, rsv2, rsv3)
    frame = b"".join(parts)
    header = parse_header(frame)
    assert header is not None
    assert (header.opcode, header.fin, header.rsv1, header.rsv2, header.rsv3, header.mask, header.length) == (opcode, fin, rsv1, rsv2, rsv3, None, length)
    # The shortest length encoding, as RFC 6455 section 5.2 requires.
    assert header.size == (2 if length < 126 else 4 if length < 65536 else 10)
    assert frame[header.size :] == payload


# -- connections end without garbage: reference counting frees them ------------


def test_finished_connections_leave_nothing_for_the_garbage_collector(server) -> None:
    """Every object of a WebSocket or HTTP connection is freed by reference
    counting when it ends. A reference cycle would keep it until a full
    collection, and those pauses grow with the connection rate (9 ms per
    pause in a connect storm, before the cycles were broken)."""
    import gc
    import urllib.error
    import urllib.request

    from websockets.sync.client import connect

    from conftest import pump_until, run_client

    server.on_message = lambda client, message: client.send(message.data)
    port = server.get_local_ip()[1]

    def clients() -> None:
        for n in range(5):
            with connect(server.get_url()) as ws:
                ws.send(f"message {n}")
                assert ws.recv() == f"message {n}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=DEADLINE).read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 404

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run_client(server, clients)
        pump_until(server, lambda: server.connection_count() == 0 and not server.reactor.lingering, what="every socket closed")
        gc.collect()
        left = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("wsserver")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


# -- large ASCII text is encoded as it is sent ---------------------------------


def test_ascii_text_gives_its_bytes_a_slice_at_a_time() -> None:
    text = AsciiText("abcdefghij" * 10)
    assert len(text) == 100 and bytes(text) == b"abcdefghij" * 10
    assert text.take(3) == b"abc"
    rest = text.after(3)
    assert len(rest) == 97 and rest.take(4) == b"defg" and bytes(rest.after(96)) == b"j"


def test_large_ascii_text_is_prepared_for_late_encoding_only_when_asked() -> None:
    big, non_ascii = "x" * 100_000, "é" * 100_000
    late = prepare_message(big, encode_late=True)
    assert isinstance(late.frames[-1], AsciiText) and late.size == len(late.frames[0]) + 100_000
    assert all(type(f) is bytes for f in prepare_message(big).frames)
    assert all(type(f) is bytes for f in prepare_message(non_ascii, encode_late=True).frames)
    assert all(type(f) is bytes for f in prepare_message("x" * 1000, encode_late=True).frames)


def test_a_large_ascii_text_reaches_websocket_clients_whole(server) -> None:
    """Sent and published: every client gets the whole text, in order with
    the messages around it (websockets checks each frame's length and UTF-8)."""
    from websockets.sync.client import connect

    from conftest import run_client

    text = "".join(chr(0x20 + i % 95) for i in range(1_000_003))

    def on_message(client, message) -> None:
        if message.data == "publish now":
            assert server.publish(text) and server.publish("published after")
        else:
            client.send(message.data)

    server.on_message = on_message

    def clients() -> list:
        with connect(server.get_url(), max_size=None) as first, connect(server.get_url(), max_size=None) as second:
            for message in ("echo before", text, "echo after"):
                first.send(message)
            got = [first.recv(), first.recv(), first.recv()]
            first.send("publish now")
            return got + [first.recv(), first.recv(), second.recv(), second.recv()]

    got = run_client(server, clients)
    assert got == ["echo before", text, "echo after", text, "published after", text, "published after"]
