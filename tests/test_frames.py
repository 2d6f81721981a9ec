"""frames.py: headers, masking, close payloads, frame building."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawws import client_frame
from wsserver.protocol.frames import (
    CloseCode,
    InvalidText,
    Opcode,
    ProtocolError,
    apply_mask,
    encode_close_payload,
    encode_frame,
    is_valid_close_code,
    parse_close_payload,
    parse_header,
)


def naive_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4), st.integers(0, 7))
def test_apply_mask_matches_the_definition(data: bytes, mask: bytes, offset: int) -> None:
    assert apply_mask(data, mask, offset) == naive_mask(data, mask, offset)


@given(st.binary(max_size=5000), st.binary(min_size=4, max_size=4), st.lists(st.integers(1, 700), max_size=10))
def test_unmasking_in_pieces_equals_unmasking_whole(data: bytes, mask: bytes, cuts: list[int]) -> None:
    masked = apply_mask(data, mask)
    pieces, offset = [], 0
    for cut in cuts + [len(masked)]:
        piece = masked[offset : offset + cut]
        pieces.append(apply_mask(piece, mask, offset))
        offset += len(piece)
    pieces.append(apply_mask(masked[offset:], mask, offset))
    assert b"".join(pieces) == data


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
def test_header_lengths_round_trip(length: int) -> None:
    frame = client_frame(Opcode.BINARY, b"x" * length)
    header = parse_header(frame)
    assert header is not None
    assert (header.opcode, header.fin, header.length, header.mask) == (Opcode.BINARY, True, length, b"\x37\xfa\x21\x3d")
    assert header.size == len(frame) - length


def test_incomplete_header_waits_for_more() -> None:
    frame = client_frame(Opcode.TEXT, b"a" * 70000)
    for cut in range(0, 14):  # 2 + 8 length bytes + 4 mask bytes
        assert parse_header(frame[:cut]) is None


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_protocol_errors(opcode: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_header(bytes([0x80 | opcode, 0x80]) + b"mask")
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_control_frames_must_be_short_and_final() -> None:
    with pytest.raises(ProtocolError, match="125"):
        parse_header(client_frame(Opcode.PING, b"x" * 126))
    with pytest.raises(ProtocolError, match="fragmented"):
        parse_header(client_frame(Opcode.PING, b"x", fin=False))


def test_64_bit_length_with_top_bit_set_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="most significant"):
        parse_header(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + b"mask")


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 70000])
def test_encode_frame_is_unmasked_and_parses_back(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    parts = encode_frame(Opcode.BINARY, payload)
    frame = b"".join(parts)
    header = parse_header(frame)
    assert header is not None and header.mask is None and header.length == length
    assert frame[header.size :] == payload
    # Large payloads travel as their own buffer, never copied behind the header.
    assert (len(parts) == 2 and parts[1] is payload) if length > 65536 else len(parts) == 1


def test_encode_frame_sets_flags() -> None:
    frame = b"".join(encode_frame(Opcode.TEXT, b"", fin=False, rsv1=True, rsv2=True, rsv3=True))
    assert frame[0] == 0x71


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    assert parse_close_payload(encode_close_payload(code, "bye")) == (code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(struct.pack("!H", code))
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR


def test_close_payload_edge_cases() -> None:
    assert parse_close_payload(b"") == (CloseCode.NO_STATUS, "")
    with pytest.raises(ProtocolError, match="1-byte"):
        parse_close_payload(b"\x03")
    with pytest.raises(InvalidText) as info:
        parse_close_payload(struct.pack("!H", 1000) + b"\xff")
    assert info.value.close_code == CloseCode.INVALID_DATA
    with pytest.raises(ValueError):
        encode_close_payload(1000, "x" * 124)
    assert encode_close_payload(None) == b""
