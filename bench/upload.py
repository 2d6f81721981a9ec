"""Uploads against the poll budget. (A benchmark, not a test.)

    python bench/upload.py                  # a 1 GiB streamed upload, then buffered 1 and 15 MiB POSTs
    python bench/upload.py --size 200 --buffered-count 3
    python bench/upload.py --browser        # the streamed upload from headless Chromium instead of curl

The server runs in this process, pumped the way a GUI loop pumps it: wait
for its descriptor to be ready (or its next timer), then ``poll(0)``, each
step timed. curl, a separate process on loopback, sends:

  stream    one multipart/form-data file of --size MiB to a route with
            ``stream=True`` (written to a temporary file, then deleted);
            with --browser, headless Chromium sends it instead, the file
            set on a page's <input type=file> over DevTools and posted
            with fetch(FormData), the way a page's upload form does
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
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsserver import Server  # noqa: E402
from wsserver.http import Request  # noqa: E402

T = TypeVar("T")


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


def run(server: Server, client: Callable[[], T]) -> tuple[float, list[tuple[float, float]], T]:
    """Run ``client`` in a thread while pumping; its wall time, the poll
    steps, and what it returned (it raises here if it raised there)."""
    running = threading.Event()
    running.set()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(client())
        except BaseException as error:  # handed to the pumping thread
            failure.append(error)
        finally:
            running.clear()

    start = time.perf_counter()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    steps = pump_while(server, running.is_set)
    thread.join()
    if failure:
        raise failure[0]
    return time.perf_counter() - start, steps, outcome[0]


def curl(argv: list[str]) -> Callable[[], str]:
    """A client that runs curl and returns its output, or raises with its error."""

    def client() -> str:
        result = subprocess.run(argv, capture_output=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"curl failed: {result.stderr!r}")
        return result.stdout.decode()

    return client


UPLOAD_PAGE = """<!doctype html><meta charset="utf-8"><title>upload</title>
<form id="f"><input type="file" name="file"></form>"""

# What a page's upload form does: the browser builds the multipart body
# from the form. Timed in the page, so the browser's start is not counted.
SUBMIT = """(async () => {
  const start = performance.now();
  const answer = await fetch("/stream", {method: "POST", body: new FormData(document.getElementById("f"))});
  return {text: await answer.text(), seconds: (performance.now() - start) / 1000};
})()"""


def chromium(url: str, path: Path, profile: Path, timing: list[float]) -> Callable[[], str]:
    """A client that opens ``url`` in headless Chromium, sets ``path`` on
    the page's file input over DevTools and posts the form; the upload's
    time, measured in the page, is appended to ``timing``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from chromium import AVAILABLE, Chromium

    if not AVAILABLE:
        sys.exit("chromium is needed for --browser")

    def client() -> str:
        with Chromium(profile, 600.0) as browser:
            session = browser.open(url)
            root = browser.call("DOM.getDocument", session)["root"]["nodeId"]
            node = browser.call("DOM.querySelector", session, nodeId=root, selector="input[type=file]")["nodeId"]
            browser.call("DOM.setFileInputFiles", session, files=[str(path)], nodeId=node)
            outcome = browser.evaluate(session, SUBMIT)
            timing.append(outcome["seconds"])
            return str(outcome["text"])

    return client


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
    parser.add_argument("--browser", action="store_true", help="send the streamed upload from headless Chromium")
    args = parser.parse_args()
    curl_path = shutil.which("curl")
    if curl_path is None:
        sys.exit("curl is needed")

    server = Server()
    server.start("127.0.0.1", 0)
    received: list[int] = []

    @server.http_server.route("/stream", methods=("POST",), stream=True)
    def stream(request: Request) -> str:
        received.append(sum(f.size for f in request.files.values()))
        return "ok"

    server.http_server.route("/", handler=lambda request: UPLOAD_PAGE)

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
        timing: list[float] = []
        if args.browser:
            sender, client = "Chromium", chromium(str(server.http_server.get_url()), big, Path(scratch) / "profile", timing)
        else:
            sender, client = "curl", curl([curl_path, "-sS", "-F", f"file=@{big}", str(server.http_server.get_url("stream"))])
        seconds, steps, answer = run(server, client)
        seconds = timing[0] if timing else seconds  # the page's own measure: the browser's start is not the upload
        # The temporary file is deleted a slice per step after the answer: those steps count too.
        deadline = time.monotonic() + 10
        steps += pump_while(server, lambda: any(incoming.iterdir()) and time.monotonic() < deadline)
        left = os.listdir(incoming)
    if answer != "ok" or received != [args.size * 1024 * 1024] or left:
        sys.exit(f"the streamed upload failed: answer {answer!r}, received {received}, left {left}")
    print(f"stream   {args.size} MiB from {sender} in {seconds:.2f} s = {args.size / seconds:.0f} MiB/s; {describe_steps(steps)}; peak RSS {rss_start:.0f} -> {peak_rss_mib():.0f} MiB")

    for mib in (1, 15):
        with tempfile.TemporaryDirectory() as scratch:
            body = Path(scratch) / "body.bin"
            write_file(body, mib)
            all_steps: list[tuple[float, float]] = []
            total = 0.0
            for _ in range(args.buffered_count):
                received.clear()
                seconds, steps, answer = run(server, curl([curl_path, "-sS", "--data-binary", f"@{body}", str(server.http_server.get_url("buffered"))]))
                if answer != "ok" or received != [mib * 1024 * 1024]:
                    sys.exit(f"a buffered POST failed: answer {answer!r}, received {received}")
                all_steps += steps
                total += seconds
        print(f"buffered {args.buffered_count} x {mib} MiB in {total:.2f} s; {describe_steps(all_steps)}; peak RSS {peak_rss_mib():.0f} MiB")
    server.shutdown()


if __name__ == "__main__":
    main()
