"""Does the GUI stay on time while the server is loaded? (A benchmark, not a test.)

    python bench/responsiveness.py                 # all scenarios, a Markdown table at the end
    python bench/responsiveness.py small large     # some of them
    python bench/responsiveness.py --poller select # the Windows path: select(), the waker thread

The server runs in a Tk main loop on a private Xvfb, pumped by
``wsserver.adapters.tk``, echoing every message. A 5 ms ``after()`` tick
records how late it fires while a separate load process (loopback only,
bounded in time and count) drives one scenario:

  idle     50 clients connected and silent: CPU time and poll() calls of the
           GUI process over a quiet window (no tick running)
  small    50 clients sending 64-byte text messages, 10 in flight each
           (raw sockets, throughput.py's load client)
  large    8 MiB binary messages back to back, each echoed
  deflate  1 MiB JSON-like text messages back to back, each echoed, with
           permessage-deflate negotiated (websockets' client, its defaults)
  connect  WebSocket connections opened and closed, 16 at a time (at most 5,000)
  tls-small    small over wss:// (a self-signed certificate made for the run)
  tls-connect  connect over wss://: a TLS handshake per connection
  burst    one raw connection pipelining masked 60-byte text frames as fast
           as the socket takes them (reading the echoes as they come)

Reported per scenario: tick lateness p50/p99/max, the load's throughput,
and how long the adapter's poll() steps took (p99/max of wall time, and the
most CPU time one step used: a step far longer in wall time than in CPU
time was preempted, not busy). Targets: lateness p99 < 4 ms, max < 8.3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICK = 0.005
SCENARIOS = ("idle", "small", "large", "deflate", "connect", "burst", "tls-small", "tls-connect")
# Where a TLS scenario keeps its certificate: the GUI process makes it, the load trusts it.
TLS_CERT_ENV = "BENCH_TLS_CERT"

# -- the load process -----------------------------------------------------------


async def load_small(url: str, seconds: float, tls: bool = False) -> dict[str, Any]:
    """The raw-socket load client of throughput.py (precomputed masked frames,
    so that the load, not the client, sets the pace): 64-byte text
    messages, 50 connections, 10 in flight on each."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput

    port = int(url.rsplit(":", 1)[1].strip("/"))
    scenario = throughput.Scenario("small", 64, text="ascii", connections=50, window=10, tls=tls)
    result = throughput.run_load(port, os.getppid(), scenario, seconds, 0.0)
    return {"messages": result["messages"], "seconds": result["seconds"]}


async def load_large(url: str, seconds: float, size: int = 8 * 1024 * 1024, limit: int = 400) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    payload = os.urandom(size)
    count = 0
    started = time.monotonic()
    async with connect(url, max_size=None, compression=None) as ws:
        while count < limit and time.monotonic() - started < seconds:
            await ws.send(payload)
            reply = await ws.recv()
            assert len(reply) == size
            count += 1
    elapsed = time.monotonic() - started
    return {"messages": count, "seconds": elapsed, "mib_per_s": count * size / 2**20 / elapsed}


async def load_deflate(url: str, seconds: float, size: int = 2**20, limit: int = 3000) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    rows = (f'{{"id":{i},"name":"item {i}","price":{i * 37 % 1000 / 10},"on":{str(i % 3 == 0).lower()}}}' for i in range(size // 40 + 1))
    text = ("[" + ",".join(rows))[:size]
    count = 0
    started = time.monotonic()
    async with connect(url, max_size=None) as ws:
        assert ws.protocol.extensions, "permessage-deflate was not negotiated"
        while count < limit and time.monotonic() - started < seconds:
            await ws.send(text)
            assert await ws.recv() == text
            count += 1
    elapsed = time.monotonic() - started
    return {"messages": count, "seconds": elapsed, "mib_per_s": count * size / 2**20 / elapsed}


async def load_connect(url: str, seconds: float, total: int = 5000, parallel: int = 16) -> dict[str, Any]:
    import ssl

    from websockets.asyncio.client import connect

    done = 0
    started = time.monotonic()
    context = ssl.create_default_context(cafile=os.environ[TLS_CERT_ENV]) if url.startswith("wss:") else None

    async def worker() -> None:
        nonlocal done
        while done < total and time.monotonic() - started < seconds:
            done += 1
            async with connect(url, compression=None, ssl=context):
                pass

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return {"messages": done, "seconds": time.monotonic() - started}


async def load_idle(url: str, seconds: float, clients: int = 50) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    connections = [await connect(url, compression=None) for _ in range(clients)]
    print("ready", flush=True)
    await asyncio.sleep(seconds)  # the quiet window the GUI process measures
    for ws in connections:
        await ws.close()
    return {"messages": 0, "seconds": seconds}


async def load_burst(url: str, seconds: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "bench"))
    from fairness import flood

    port = int(url.rsplit(":", 1)[1].strip("/"))
    started = time.monotonic()
    rate = flood(port, seconds)["echoed_per_s"]
    elapsed = time.monotonic() - started
    return {"messages": int(rate * elapsed), "seconds": elapsed}


def run_load(scenario: str, url: str, seconds: float) -> None:
    load = {
        "small": load_small,
        "large": load_large,
        "deflate": load_deflate,
        "connect": load_connect,
        "idle": load_idle,
        "burst": load_burst,
        "tls-small": lambda url, seconds: load_small(url, seconds, tls=True),
        "tls-connect": load_connect,
    }[scenario]
    result = asyncio.run(load(url, seconds))
    print(json.dumps(result), flush=True)


# -- the GUI process ------------------------------------------------------------


def _run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux
    schedstat; 0 where the kernel does not say)."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(scenario: str, seconds: float) -> dict[str, Any]:
    import tkinter

    import wsserver
    from wsserver.adapters import tk as tk_adapter

    root = tkinter.Tk()
    ssl_context = None
    if scenario.startswith("tls"):
        from wsserver.tls import self_signed_context

        ssl_context = self_signed_context(["127.0.0.1"], certfile=os.environ[TLS_CERT_ENV])
    server = wsserver.Server(max_message_size=16 * 2**20, ssl_context=ssl_context)
    server.on_message = lambda client, message: client.send(message.data)
    server.start("127.0.0.1", 0)

    poll_durations: list[float] = []
    poll_cpu: list[float] = []
    poll = server.poll

    def timed_poll(timeout: float = 0.0) -> bool:
        # Wall and CPU time of each step: a step whose wall time is far above
        # its CPU time was preempted (the machine is shared), not busy.
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return poll(timeout)
        finally:
            poll_durations.append(time.perf_counter() - started)
            poll_cpu.append(time.thread_time() - cpu)

    server.poll = timed_poll  # type: ignore[method-assign]
    tk_adapter.attach(server, root)

    gc_pauses: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)

    load = subprocess.Popen(
        [sys.executable, __file__, "--load", scenario, server.get_url(), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lateness: list[float] = []
    own_lateness: list[float] = []
    idle: dict[str, float] = {}
    output: list[str] = []
    tick_id = [""]

    def tick(due: float, queued: float) -> None:
        late = time.perf_counter() - due
        lateness.append(late)
        # The time this thread waited for a CPU while the tick was pending is
        # the shared machine's doing, not the program's.
        own_lateness.append(max(0.0, late - (_run_queue_wait() - queued)))
        schedule_tick()

    def schedule_tick() -> None:
        tick_id[0] = root.after(int(TICK * 1000), tick, time.perf_counter() + TICK, _run_queue_wait())

    def start_idle_window() -> None:
        idle.update(cpu=time.process_time(), polls=len(poll_durations), wall=time.monotonic(), clients=server.client_count())
        root.after(int((seconds - 1.0) * 1000), end_idle_window)

    def end_idle_window() -> None:
        idle.update(
            cpu=time.process_time() - idle["cpu"],
            polls=len(poll_durations) - idle["polls"],
            wall=time.monotonic() - idle["wall"],
        )

    def on_output(fd: int, mask: int) -> None:
        # The load's stdout: "ready" (idle only), then its result, then EOF.
        line = load.stdout.readline()
        if not line:
            root.tk.deletefilehandler(fd)
            root.quit()
        elif line.strip() == "ready":
            # Let the 50 handshakes be served, then measure a quiet window.
            root.after(500, start_idle_window)
        else:
            output.append(line)

    root.tk.createfilehandler(load.stdout.fileno(), tkinter.READABLE, on_output)
    # Nothing else wakes the process: the idle scenario runs no tick, since
    # the point is what the process does when nothing happens.
    if scenario != "idle":
        schedule_tick()
    root.after(int((seconds + 30) * 1000), root.quit)  # the load hung: give up
    root.mainloop()
    if tick_id[0]:
        root.after_cancel(tick_id[0])
    gc.callbacks.remove(on_gc)

    if load.poll() is None:
        load.kill()
    load.wait()
    load.stdout.close()
    server.stop()
    root.destroy()
    result = json.loads(output[-1]) if output else {"messages": 0, "seconds": 0.0}
    row: dict[str, Any] = {"scenario": scenario, **result}
    if lateness:
        ms = [x * 1000 for x in lateness]
        row.update(ticks=len(ms), p50=statistics.median(ms), p99=percentile(ms, 0.99), max=max(ms))
        own = [x * 1000 for x in own_lateness]
        row.update(own_p99=percentile(own, 0.99), own_max=max(own))
        row.update(gc_runs=len(gc_pauses), gc_max=max(gc_pauses, default=0.0) * 1000)
    if poll_durations:
        ms = [x * 1000 for x in poll_durations]
        row.update(polls=len(ms), poll_p99=percentile(ms, 0.99), poll_max=max(ms), poll_cpu_max=max(poll_cpu) * 1000)
    if idle:
        row["idle"] = idle
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | tick lateness p50 / p99 / max (ms) | lateness less CPU wait p99 / max (ms) | throughput | poll() step p99 / max (ms), max CPU (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["scenario"] == "idle":
            idle = row["idle"]
            lines.append(
                f"| idle, {idle['clients']} clients | (no tick) | | {idle['polls']} poll() calls and "
                f"{idle['cpu'] * 1000:.0f} ms CPU in {idle['wall']:.1f} s ({idle['cpu'] / idle['wall'] * 100:.2f} % CPU) | |"
            )
            continue
        rate = row["messages"] / row["seconds"] if row["seconds"] else 0.0
        unit = {
            "small": "messages/s echoed",
            "large": "8 MiB messages/s echoed",
            "deflate": "1 MiB compressed messages/s echoed",
            "connect": "connections/s",
            "burst": "messages/s echoed (one client)",
            "tls-small": "messages/s echoed over TLS",
            "tls-connect": "TLS connections/s",
        }[row["scenario"]]
        extra = f" ({row['mib_per_s']:.0f} MiB/s each way)" if "mib_per_s" in row else ""
        lines.append(
            f"| {row['scenario']} | {row['p50']:.2f} / {row['p99']:.2f} / {row['max']:.2f} | "
            f"{row['own_p99']:.2f} / {row['own_max']:.2f} | "
            f"{rate:,.{1 if rate < 100 else 0}f} {unit}{extra} | {row['poll_p99']:.2f} / {row['poll_max']:.2f}, {row['poll_cpu_max']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each scenario (default 6)")
    parser.add_argument(
        "--poller",
        choices=("native", "select"),
        default="native",
        help="select: the Windows path (select() without a descriptor, woken by the waker thread), WSSERVER_POLLER=select",
    )
    parser.add_argument("--load", nargs=3, metavar=("SCENARIO", "URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        scenario, url, seconds = args.load
        run_load(scenario, url, float(seconds))
        return 0
    if args.poller == "select":
        os.environ["WSSERVER_POLLER"] = "select"
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    sys.path.insert(0, str(ROOT / "tests"))
    from xvfb import Xvfb

    rows = []
    import tempfile

    with Xvfb(), tempfile.TemporaryDirectory() as folder:
        os.environ[TLS_CERT_ENV] = os.path.join(folder, "cert.pem")  # inherited by the load processes
        for scenario in args.scenarios or SCENARIOS:
            row = measure(scenario, args.seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
