"""wsserver.rpc.protocol alone (sans-I/O): any text is parsed into items or
left alone, never an exception, and what is built encodes as the
specification's shapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsserver.rpc.protocol import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Answer,
    Call,
    Invalid,
    RpcError,
    call_message,
    encode,
    error_message,
    parse,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["jsonrpc", "method", "params", "id", "result", "error", "x"]), children, max_size=5),
    max_leaves=20,
)


@given(st.text(max_size=200) | json_values.map(json.dumps), st.booleans())
def test_any_text_parses_or_is_left_alone(text: str, exclusive: bool) -> None:
    parsed = parse(text, exclusive=exclusive, max_depth=8, max_batch=3)
    if parsed is None:
        assert not exclusive
        return
    assert parsed.items and all(isinstance(item, (Call, Answer, Invalid)) for item in parsed.items)
    assert len(parsed.items) <= 3
    for item in parsed.items:
        if isinstance(item, Invalid):
            encode(error_message(item.id, item.error))  # every error can be sent back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"jsonrpc": "2.0", "method": "m", "params": [1], "id": 1}', Call("m", [1], 1, False)),
        ('{"jsonrpc": "2.0", "method": "m"}', Call("m", None, None, True)),
        ('{"jsonrpc": "2.0", "method": "m", "id": null}', Call("m", None, None, False)),
        ('{"jsonrpc": "2.0", "result": 5, "id": 3}', Answer(3, 5, None)),
        ('{"jsonrpc": "2.0", "result": 5, "error": {"code": 1, "message": "x"}, "id": 3}', Invalid(3, RpcError(INVALID_REQUEST))),
        ('{"jsonrpc": "2.0", "method": "m", "id": [1]}', Invalid(None, RpcError(INVALID_REQUEST))),
        ('{"jsonrpc": "2.0", "method": "m", "id": 1.5}', Call("m", None, 1.5, False)),
    ],
)
def test_items(text: str, expected: object) -> None:
    parsed = parse(text, exclusive=True, max_depth=8, max_batch=3)
    assert parsed is not None and not parsed.batch
    (item,) = parsed.items
    if isinstance(expected, Invalid):
        assert isinstance(item, Invalid) and (item.id, item.error.code) == (expected.id, expected.error.code)
    else:
        assert item == expected


def test_an_answers_error_that_is_not_an_error_object() -> None:
    parsed = parse('{"jsonrpc": "2.0", "error": "boom", "id": 3}', exclusive=False, max_depth=8, max_batch=3)
    assert parsed is not None
    (answer,) = parsed.items
    assert isinstance(answer, Answer) and answer.error is not None and answer.error.data == "boom"


def test_non_json_numbers_are_a_parse_error() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        parsed = parse(f'{{"jsonrpc": "2.0", "method": "m", "params": [{constant}], "id": 1}}', exclusive=True, max_depth=8, max_batch=3)
        assert parsed is not None and parsed.items[0].error.code == PARSE_ERROR  # type: ignore[union-attr]


def test_built_messages() -> None:
    assert call_message("m", [], 1) == {"jsonrpc": "2.0", "method": "m", "id": 1}
    assert call_message("m", [1], notification=True) == {"jsonrpc": "2.0", "method": "m", "params": [1]}
    assert RpcError(-32000, data={"a": 1}).to_json() == {"code": -32000, "message": "Call timed out", "data": {"a": 1}}
    with pytest.raises(ValueError):
        encode({"x": float("nan")})
    with pytest.raises(TypeError):
        RpcError(True)  # type: ignore[arg-type]
