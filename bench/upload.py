"""Uploads against the poll budget. (A benchmark, not a test.)

    python bench/upload.py                  # a 1 GiB streamed upload, then buffered 1 and 15 MiB POSTs
    python bench/upload.py --size 200 --buffered-count 3

The server runs in this process, pumped the way a GUI loop pumps it: wait
for its descriptor to be ready (or its next timer), then ``poll(0)``, each
step timed. curl, a separate process on loopback, sends:

  stream    one multipart/form-data file of --size MiB to a route with
            ``stream=True`` (written to a temporary file, then deleted)
  buffered  --buffered-count POSTs of 1 MiB (the default max_body_size)
            and of 15 MiB (a route that raises it) to routes that take the
            body whole (``request.body``): it is made ``bytes`` with one
            copy once complete, the step that grows with its size

Reported: the upload's wall time and throughput, the poll steps' p99 and
max (the budget is the reactor's, 2 ms by default, plus one slice of work),
and the process's peak RSS before and after (ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsserver import Server  # noqa: E402
from wsserver.http import Request  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_file(path: Path, mib: int) -> None:
    """``mib`` MiB of random-looking bytes (one random MiB repeated), written a block at a time."""
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        for _ in range(mib):
            file.write(block)


def pump_while(server: Server, running: Callable[[], bool]) -> list[tuple[float, float]]:
    """Pump ``server`` as a GUI loop would while ``running()``; the wall
    time and the CPU time of every step (a step much longer in wall time
    than in CPU time waited: preempted, or the kernel held a write back)."""
    steps: list[tuple[float, float]] = []
    fileno = server.fileno()
    selector = selectors.DefaultSelector()
    if fileno is not None:
        selector.register(fileno, selectors.EVENT_READ)
    more = False
    while running():
        if not more:  # poll() said work is left over: no waiting then
            deadline = server.next_deadline()
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            if fileno is not None:
                selector.select(wait)
        start, cpu = time.perf_counter(), time.thread_time()
        more = server.poll(0)
        steps.append((time.perf_counter() - start, time.thread_time() - cpu))
    selector.close()
    return steps


def run(server: Server, argv: list[str]) -> tuple[float, list[tuple[float, float]], subprocess.CompletedProcess[bytes]]:
    """Run curl while pumping; its wall time, the poll steps, its outcome."""
    running = threading.Event()
    running.set()
    result: list[subprocess.CompletedProcess[bytes]] = []

    def client() -> None:
        result.append(subprocess.run(argv, capture_output=True, timeout=600))
        running.clear()

    start = time.perf_counter()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    steps = pump_while(server, running.is_set)
    thread.join()
    return time.perf_counter() - start, steps, result[0]


def describe_steps(steps: list[tuple[float, float]]) -> str:
    busy = sorted(wall for wall, _ in steps if wall > 0.0001) or [0.0]
    p99 = busy[min(len(busy) - 1, int(len(busy) * 0.99))]
    most_cpu = max((cpu for _, cpu in steps), default=0.0)
    return (
        f"{len(busy)} busy steps, p50 {statistics.median(busy) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms,"
        f" max {max(busy) * 1000:.2f} ms (most CPU in a step {most_cpu * 1000:.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB of the streamed upload (default 1024)")
    parser.add_argument("--buffered-count", type=int, default=5, help="buffered POSTs of each size (default 5)")
    args = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        sys.exit("curl is needed")

    server = Server()
    server.start("127.0.0.1", 0)
    received: list[int] = []

    @server.http_server.route("/stream", methods=("POST",), stream=True)
    def stream(request: Request) -> str:
        received.append(sum(f.size for f in request.files.values()))
        return "ok"

    @server.http_server.route("/buffered", methods=("POST",), max_body_size=16 * 1024 * 1024)
    def buffered(request: Request) -> str:
        received.append(len(request.body))
        return "ok"

    rss_start = peak_rss_mib()
    with tempfile.TemporaryDirectory() as scratch:
        incoming = Path(scratch) / "incoming"
        incoming.mkdir()
        server.http_server.upload_dir = str(incoming)
        big = Path(scratch) / "upload.bin"
        write_file(big, args.size)
        seconds, steps, result = run(server, [curl, "-sS", "-F", f"file=@{big}", str(server.http_server.get_url("stream"))])
        # The temporary file is deleted a slice per step after the answer: those steps count too.
        deadline = time.monotonic() + 10
        steps += pump_while(server, lambda: any(incoming.iterdir()) and time.monotonic() < deadline)
        left = os.listdir(incoming)
    if result.returncode != 0 or received != [args.size * 1024 * 1024] or left:
        sys.exit(f"the streamed upload failed: {result.stderr!r}, received {received}, left {left}")
    print(f"stream   {args.size} MiB in {seconds:.2f} s = {args.size / seconds:.0f} MiB/s; {describe_steps(steps)}; peak RSS {rss_start:.0f} -> {peak_rss_mib():.0f} MiB")

    for mib in (1, 15):
        with tempfile.TemporaryDirectory() as scratch:
            body = Path(scratch) / "body.bin"
            write_file(body, mib)
            all_steps: list[tuple[float, float]] = []
            total = 0.0
            for _ in range(args.buffered_count):
                received.clear()
                seconds, steps, result = run(server, [curl, "-sS", "--data-binary", f"@{body}", str(server.http_server.get_url("buffered"))])
                if result.returncode != 0 or received != [mib * 1024 * 1024]:
                    sys.exit(f"a buffered POST failed: {result.stderr!r}")
                all_steps += steps
                total += seconds
        print(f"buffered {args.buffered_count} x {mib} MiB in {total:.2f} s; {describe_steps(all_steps)}; peak RSS {peak_rss_mib():.0f} MiB")
    server.shutdown()


if __name__ == "__main__":
    main()
