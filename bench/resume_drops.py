"""A real page through a hundred drops, losing nothing. (A soak, not a test.)

    python bench/resume_drops.py                      # 30,000 messages each way, about 2.5 minutes
    python bench/resume_drops.py --messages 5000 --seed 2

The scenario of ``tests/test_resume_browser.py``, run for minutes instead
of one drop: headless Chromium runs ``/wsserver-rpc.js`` with
``{resume: true}`` and sends p1..pN as fast as its timers allow, the
program publishes s1..sN every 4 ms, and the page reaches the server
through a loopback relay that can go silent. Every 0.5 to 2 s the
connection breaks, one way chosen at random:

  silent then reset  the relay goes silent (what either side sends is lost),
                     then the server resets the connection
  reset              the server resets the connection, no Close frame
  silent then cut    the relay goes silent, then ends the connection at both
                     ends (its TCP finally dying), the server not told first

and the page must resume before the next one. At the end each side must
have every number of the other exactly once, in order, with one session,
no failed resume and no error; the exit status is 1 otherwise. Needs
Chromium (``bash .ci/run`` installs it).
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import test_resume_browser as scenario_module  # noqa: E402  (the page, the relay, the program's side)
from chromium import AVAILABLE, Chromium  # noqa: E402
from conftest import Worker, pump_until  # noqa: E402
from wsserver import Server  # noqa: E402
from wsserver.resume import ResumePolicy  # noqa: E402

DROPS = ("silent then reset", "reset", "silent then cut")
#: Messages the program sends into a silent relay before the drop.
LOST_IN_SILENCE = 30


def wait_while_alive(server: Server, page: Worker, seconds: float) -> None:
    """Pump the server for ``seconds``, or until the page is done."""
    until = time.monotonic() + seconds
    pump_until(server, lambda: time.monotonic() >= until or not page.is_alive(), seconds + 30.0, "the next drop")


def break_and_resume(scenario: scenario_module.Scenario, how: str) -> None:
    """Break the page's connection ``how``, then pump until it has resumed."""
    server, resumes = scenario.server, len(scenario.resumed)
    if how.startswith("silent"):
        scenario.relay.silence()
        silent_from = scenario.published
        pump_until(server, lambda: scenario.published >= silent_from + LOST_IN_SILENCE, 30.0, "messages sent into the silence")
    if how.endswith("reset"):
        scenario.drop_from_the_server()
    if how.startswith("silent"):
        scenario.relay.cut_silent()
    pump_until(server, lambda: len(scenario.resumed) > resumes, 60.0, f"the page to resume after '{how}'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000, help="messages each side sends")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not AVAILABLE:
        print("Chromium is not installed")
        return 2
    total = scenario_module.TOTAL = args.messages
    rng = random.Random(args.seed)
    server = Server(resume=ResumePolicy())
    server.start("127.0.0.1", 0)
    scenario = scenario_module.Scenario(server)
    profile = pathlib.Path(tempfile.mkdtemp()) / "profile"

    def browse() -> Any:
        with Chromium(profile, 60.0 + total * 0.02, flags=("--disable-background-timer-throttling",)) as browser:
            session = browser.open(f"http://127.0.0.1:{scenario.relay.port}/")
            browser.evaluate(session, scenario_module.START % ("{}", total))
            return browser.evaluate(session, scenario_module.FINISH % (total, total))

    page = Worker(browse)
    page.start()
    started = time.monotonic()
    drops = dict.fromkeys(DROPS, 0)
    try:
        pump_until(server, lambda: len(scenario.received) >= 50, 60.0, "traffic both ways")
        while True:
            wait_while_alive(server, page, rng.uniform(0.5, 2.0))
            if not page.is_alive() or scenario.published > total - 4 * LOST_IN_SILENCE:
                break  # near the end: the page could be done before it resumed
            how = rng.choice(DROPS)
            break_and_resume(scenario, how)
            drops[how] += 1
        pump_until(server, lambda: not page.is_alive(), 60.0 + total * 0.02, "every message")
        outcome = page.outcome()
        sessions_ok = len(scenario.opened) == 1 and not scenario.closed and not scenario.failed and not scenario.errors
    finally:  # stopping ends the session (on_client_closed): judged before
        scenario.relay.close()
        server.shutdown()
    seconds = time.monotonic() - started
    program_ok = scenario.received == scenario_module.numbers("p", total)
    page_ok = outcome["got"] == scenario_module.numbers("s", total)
    print(f"{seconds:.0f} s, {sum(drops.values())} drops ({', '.join(f'{n} {how}' for how, n in drops.items())}), {len(scenario.resumed)} resumes")
    print(f"the program has p1..p{total} once each, in order: {program_ok}")
    print(f"the page has s1..s{total} once each, in order: {page_ok}")
    print(f"one session, no failed resume, no error: {sessions_ok}")
    return 0 if program_ok and page_ok and sessions_ok else 1


if __name__ == "__main__":
    sys.exit(main())
