"""A thousand pages back at once: every session away, then every page resuming. (A benchmark, not a test.)

    python bench/resume_storm.py                          # 1,000 sessions, 500 messages each
    python bench/resume_storm.py --sessions 1000 --messages 2000

What a Wi-Fi access point that restarts does to a program with resumable
sessions (``wsserver.resume``): every page's connection drops at once
(a reset, no Close frame), the program goes on publishing, and then every
page comes back within a moment, each owed the same replay. ``websockets``
sans-I/O clients (``tests/swarm.py``) play the pages, stepped on this
thread between the server's ``poll(0)`` calls, as a GUI loop would pump
it; each of the server's steps is timed.

Reports whether every page got ``resumed`` and then exactly the messages
published while it was away, in order, how long the whole replay took, and
the poll steps' median, p99 and longest. Replays go 64 messages a turn
within the step's budget, so the steps stay near the budget (2 ms); the
longest ones are the listener's accepts (32 per readiness event, as in any
connect storm) and garbage collections, which here walk the clients'
objects as well as the server's. The replays' time includes the clients'
own work, on the same thread.
``tests/test_resume.py`` runs a smaller storm for its correctness.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from swarm import Swarm, raise_open_file_limit  # noqa: E402
from wsserver import Client, Server  # noqa: E402
from wsserver.resume import ResumePolicy  # noqa: E402

#: Connections opened at a time, within the listener's backlog.
BATCH = 100


@dataclass
class StormResult:
    sessions: int
    messages: int
    seconds: float = 0.0
    steps: list[float] = field(default_factory=list)
    #: What went wrong, page by page: empty when every page got its replay exactly.
    problems: list[str] = field(default_factory=list)
    #: Sessions that ended before the server stopped (none should).
    ended: int = 0

    def summary(self) -> str:
        steps = sorted(self.steps)
        p99 = steps[int(len(steps) * 0.99)] if steps else 0.0
        return (
            f"{self.sessions} pages resuming at once, {self.messages} messages owed to each: "
            f"{'every replay exact' if not self.problems else f'{len(self.problems)} problems'}, {self.ended} sessions ended; "
            f"{self.seconds:.2f} s, {len(steps)} poll steps: median {statistics.median(steps) * 1e3:.2f} ms, "
            f"p99 {p99 * 1e3:.2f} ms, longest {steps[-1] * 1e3:.2f} ms"
        )


def resume_storm(sessions: int = 1000, messages: int = 500, deadline: float = 120.0) -> StormResult:
    raise_open_file_limit(2 * sessions + 256)
    result = StormResult(sessions, messages)
    server = Server(resume=ResumePolicy(max_away=sessions, away_timeout=600.0), max_connections=sessions + BATCH)
    server.start("127.0.0.1", 0)
    ended: list[Client] = []
    server.on_client_closed = ended.append
    address = server.get_local_ip()
    assert address is not None
    stop_at = time.monotonic() + deadline

    def pump(condition: Callable[[], bool], what: str) -> None:
        while not condition():
            if time.monotonic() > stop_at:
                raise TimeoutError(f"the storm passed its deadline waiting for {what}")
            started = time.perf_counter()
            server.poll(0)
            result.steps.append(time.perf_counter() - started)

    host, port = address
    first = Swarm(f"ws://{host}:{port}/")
    again = Swarm(f"ws://{host}:{port}/")

    def pump_pages(swarm: Swarm, condition: Callable[[], bool], what: str) -> None:
        def stepped() -> bool:
            swarm.step()
            return condition()

        pump(stepped, what)

    try:
        # Every page connects with a new session and reads its token.
        for at in range(0, sessions, BATCH):
            count = min(BATCH, sessions - at)
            first.open(count, host, port, ["/?wsserver-resume=new"] * count)
            pump_pages(first, lambda: all(page.messages or page.tcp_closed for page in first.clients), "the new sessions")
        tokens = [json.loads(page.messages[0][1:])["token"] for page in first.clients]
        # Gone without a Close frame: a reset each, as the swarm closes them.
        for page in first.clients:
            page.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.stop()
        pump(lambda: server.connection_count() == 0, "every session to be away")
        owed = [f"m{n}" for n in range(1, messages + 1)]
        for data in owed:
            server.publish(data)

        # Every page comes back at once.
        result.steps.clear()
        started = time.monotonic()
        for at in range(0, sessions, BATCH):
            again.open(min(BATCH, sessions - at), host, port, [f"/?wsserver-resume={token}&wsserver-received=0&wsserver-first=1" for token in tokens[at : at + BATCH]])
            pump_pages(again, lambda: server.connection_count() == len(again.clients), "the resumes to be accepted")
        pump_pages(again, lambda: all(len(page.messages) > messages or page.tcp_closed for page in again.clients), "every replay")
        result.seconds = time.monotonic() - started
        result.ended = len(ended)
        expected = ["." + data for data in owed]
        for n, page in enumerate(again.clients):
            if not page.opened:
                result.problems.append(f"page {n}: no upgrade (HTTP {page.status})")
            elif not page.messages or json.loads(page.messages[0][1:]) != {"type": "resumed", "received": 0} or page.messages[1:] != expected:
                result.problems.append(f"page {n}: {len(page.messages)} messages, first {page.messages[:2]}")
    finally:
        first.stop()
        again.stop()
        server.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    result = resume_storm(args.sessions, args.messages)
    print(result.summary())
    for problem in result.problems[:10]:
        print(problem)
    sys.exit(1 if result.problems else 0)


if __name__ == "__main__":
    main()
