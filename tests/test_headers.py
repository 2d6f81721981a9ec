"""http/headers.py: case-insensitive, order-keeping, multi-valued headers."""

from __future__ import annotations

import pytest

from wsserver.http.headers import Headers


def test_lookups_ignore_case_and_keep_every_value_in_order() -> None:
    headers = Headers([("Host", "a"), ("Accept", "x"), ("accept", "y"), ("X-One", "1")])
    assert headers["HOST"] == "a" and headers.get("accept") == "x" and headers.get("missing") is None
    assert headers.get_all("ACCEPT") == ["x", "y"] and headers.get_all("x-one") == ["1"] and headers.get_all("nope") == []
    assert "x-ONE" in headers and "nope" not in headers and 3 not in headers
    assert list(headers) == ["Host", "Accept", "X-One"] and len(headers) == 3
    assert headers.raw_items() == [("Host", "a"), ("Accept", "x"), ("accept", "y"), ("X-One", "1")]
    with pytest.raises(KeyError):
        headers["nope"]


def test_setting_replaces_every_value_and_deleting_removes_them() -> None:
    headers = Headers({"Accept": "x"})
    headers.add("ACCEPT", "y")
    headers["accept"] = "z"
    assert headers.get_all("Accept") == ["z"] and headers.raw_items() == [("accept", "z")]
    headers.add("Accept", "again")
    assert headers.get_all("accept") == ["z", "again"]
    del headers["ACCEPT"]
    assert "accept" not in headers and headers.raw_items() == [] and len(headers) == 0
    with pytest.raises(KeyError):
        del headers["accept"]
    headers.add("Accept", "back")
    assert headers.get_all("accept") == ["back"]
    assert repr(headers) == "Headers([('Accept', 'back')])"
