"""A bounded soak (``bench/soak.py``): 1,000 clients at a time connect and
disconnect in waves while the server publishes numbered messages."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

SOAK = pathlib.Path(__file__).resolve().parent.parent / "bench" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_delivers_every_message_in_order_and_leaks_nothing():
    result = load_soak().soak(batch=500, waves=2, per_wave=60, deadline=120)
    print(result.summary())
    assert not result.problems, result.problems[:10]
    assert result.peak_connected == 1000
    assert result.connections == 1500
    assert result.deliveries_checked > 50_000
    # No leak per connection: a single leaked object per connection would
    # be 1,500 more blocks. What the bytes may gain is one resize step of
    # the server's client dict and connection set (see bench/soak.py),
    # under 128 KiB for 1,000 connections at once.
    assert result.after_blocks - result.baseline_blocks < 50
    assert result.after_bytes - result.baseline_bytes < 128 * 1024
