"""A bounded soak (``bench/soak.py``): 1,000 clients at a time connect and
disconnect in waves while the server publishes numbered messages, with
and without permessage-deflate."""

from __future__ import annotations

import pytest

from conftest import load_program
from wsserver import Server


def load_soak():
    return load_program("bench/soak.py")


# Without coverage's line tracer (pytest-cov's no_cover): under it the
# waves ran 1.5 to 2 times slower, enough on a slow machine to pass the
# soak's own deadline, which measures the server, not the tracer.
@pytest.mark.slow
@pytest.mark.no_cover
@pytest.mark.timeout(180)
def test_soak_delivers_every_message_in_order_and_leaks_nothing():
    result = load_soak().soak(batch=500, waves=2, per_wave=60, deadline=120)
    print(result.summary())
    assert not result.problems, result.problems[:10]
    assert result.peak_connected == 1001  # the waves and the resident client
    assert result.connections == 1500
    assert result.deliveries_checked > 50_000
    # No leak per connection: a single leaked object per connection would
    # be 1,500 more blocks. What may differ is a constant: the reactor
    # sweeps cancelled timers from its heap once they pass 64 and half of
    # it, so up to 64 wait there (4 blocks each: timer, heap entry, due
    # time, sequence number). What the bytes may gain is one resize step
    # of the server's client dict and connection set (see bench/soak.py),
    # under 128 KiB for 1,000 connections at once.
    assert result.after_blocks - result.baseline_blocks < 4 * 64 + 20
    assert result.after_bytes - result.baseline_bytes < 128 * 1024


@pytest.mark.slow
@pytest.mark.no_cover
@pytest.mark.timeout(180)
def test_a_compressed_soak_delivers_in_order_and_leaves_no_zlib_state_behind():
    """The same with permessage-deflate: each client's messages compressed
    with its own context, so a connection that left without letting go of
    its compressor (38 KiB) would show in the bytes at once."""
    result = load_soak().soak(batch=500, waves=2, per_wave=60, deadline=120, deflate=True)
    print(result.summary())
    assert not result.problems, result.problems[:10]
    assert result.connections == 1500 and result.deliveries_checked > 50_000
    assert result.after_blocks - result.baseline_blocks < 4 * 64 + 20
    assert result.after_bytes - result.baseline_bytes < 128 * 1024


def test_a_closed_connection_is_released_at_once_beside_a_long_lived_one():
    """Nothing of a closed connection may wait for its timers' due time
    (handshake, heartbeat: seconds to hours) to be freed, even while a
    long-lived client keeps an earlier timer at the top of the heap."""
    import gc
    import weakref

    from conftest import pump_until
    from swarm import HealthyClient, Swarm, wait_round_trips

    server = Server(heartbeat_interval=3600)
    server.on_message = lambda client, message: client.send(message.data)
    gone: list[weakref.ref] = []
    server.on_client_closed = lambda client: gone.append(weakref.ref(client))
    server.start("127.0.0.1", 0)

    def pump(condition):
        pump_until(server, condition)

    resident = HealthyClient(server.get_url())  # the long-lived client
    resident.start()
    wait_round_trips(resident, pump)
    swarm = Swarm(server.get_url())
    swarm.start()
    try:
        swarm.call(swarm.open, 200, *server.get_local_ip())
        pump(lambda: sum(c.opened for c in swarm.clients) == 200)
        swarm.call(lambda: [swarm.close(c) for c in swarm.clients])
        pump(lambda: len(gone) == 200 and server.connection_count() == 1)
    finally:
        swarm.stop()
    wait_round_trips(resident, pump)
    gc.collect()
    assert [ref for ref in gone if ref() is not None] == []
    assert len(server.reactor._timers) < 100  # the cancelled timers went too
    resident.finish(pump)
    server.stop()
