"""How fast does a GUI-hosted server answer, by the way its loop learns of work? (A benchmark, not a test.)

    python bench/wakeup.py                    # Tk and Qt, every wake-up mode, a Markdown table at the end
    python bench/wakeup.py --toolkits tk --idle 2.5 --samples 5

Each row runs in its own process: a server that echoes, pumped by the Tk
adapter (on a private Xvfb) or the Qt adapter (offscreen platform), and one
``websockets`` client on a thread. The client times sequential echoes while
busy, then the first echo after each of a few idle pauses; the GUI process
counts its ``poll()`` calls over the last second of the last pause. The modes:

  descriptor  the platform's poller (epoll here), whose descriptor the loop watches
  thread      select() without a descriptor, as on Windows (WSSERVER_POLLER=select),
              woken by the waker thread: the default there
  timer       the same select() path, pumped on a timer (wakeup="timer"): what
              Windows got before the waker thread, and still an explicit option
  notifiers   (Qt only) the alternative the waker thread was chosen over: a
              prototype pump with one QSocketNotifier per watched socket and
              direction, synchronised with the select() poller after each poll

On Windows the timer row is worse than here: Tk's and Qt's coarse timers
tick at the system's 15.6 ms there.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODES = ("descriptor", "thread", "timer", "notifiers")
TOOLKITS = ("tk", "qt")


def client(url: str, busy: int, samples: int, idle: float, idle_window: list[float], outcome: dict[str, Any]) -> None:
    """Sequential echoes: ``busy`` back to back, then one after each of
    ``samples`` pauses of ``idle`` seconds (the pause is the workload, not
    synchronisation), into ``outcome``; then "quit". Marks the last pause
    in ``idle_window``."""
    from websockets.sync.client import connect

    with connect(url, compression=None) as ws:

        def echo() -> float:
            started = time.perf_counter()
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
            return time.perf_counter() - started

        for _ in range(50):  # warm-up
            echo()
        busy_trips = [echo() for _ in range(busy)]
        after_idle = []
        for sample in range(samples):
            if sample == samples - 1:
                idle_window.append(time.monotonic())
            time.sleep(idle)
            if sample == samples - 1:
                idle_window.append(time.monotonic())
            after_idle.append(echo())
        outcome.update(busy=busy_trips, after_idle=after_idle)
        ws.send("quit")


def run_child(toolkit: str, mode: str, busy: int, samples: int, idle: float) -> dict[str, Any]:
    import wsserver

    server = wsserver.Server(heartbeat_interval=None)
    polls: list[float] = []
    poll = server.poll

    def counted_poll(timeout: float = 0.0) -> bool:
        polls.append(time.monotonic())
        return poll(timeout)

    server.poll = counted_poll  # type: ignore[method-assign]
    server.start("127.0.0.1", 0)
    wakeup = "timer" if mode == "timer" else "auto"
    if mode == "notifiers" and toolkit != "qt":
        return {"error": "notifiers: Qt only"}
    outcome: dict[str, Any] = {}
    idle_window: list[float] = []

    def talk() -> None:
        try:
            client(server.get_url(), busy, samples, idle, idle_window, outcome)
        except BaseException as exc:  # reported by the parent
            outcome["error"] = repr(exc)
            quit_loop()

    if toolkit == "tk":
        import tkinter

        from wsserver.adapters import tk as tk_adapter

        root = tkinter.Tk()
        handle = tk_adapter.attach(server, root, wakeup=wakeup)
        quit_loop = root.quit
        server.on_message = lambda c, m: root.quit() if m.data == "quit" else c.send(m.data)
        threading.Thread(target=talk, daemon=True).start()
        root.after(int((busy * 0.05 + samples * idle + 30) * 1000), root.quit)  # a hung client: give up
        root.mainloop()
    else:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtCore import QCoreApplication, QTimer

        from wsserver.adapters import qt as qt_adapter

        app = QCoreApplication([])
        handle = NotifierPump(server) if mode == "notifiers" else qt_adapter.attach(server, app, wakeup=wakeup)
        quit_loop = app.quit
        server.on_message = lambda c, m: app.quit() if m.data == "quit" else c.send(m.data)
        threading.Thread(target=talk, daemon=True).start()
        QTimer.singleShot(int((busy * 0.05 + samples * idle + 30) * 1000), app.quit)
        app.exec()
    resolved = handle.wakeup
    handle.detach()
    server.stop()
    if "error" in outcome or len(idle_window) < 2:
        return {"error": outcome.get("error", "the client did not finish")}
    # The last second of the last pause: timer pumping stays fast for a
    # second (its linger) after traffic.
    end = idle_window[1]
    start = max(idle_window[0], end - 1.0)
    idle_polls = sum(1 for t in polls if start <= t <= end)
    return {
        "toolkit": toolkit,
        "mode": mode,
        "wakeup": resolved,
        "busy_ms": statistics.median(outcome["busy"]) * 1000,
        "after_idle_ms": statistics.median(outcome["after_idle"]) * 1000,
        "idle_polls_per_s": idle_polls / (end - start),
    }


class NotifierPump:
    """The prototype of the ``notifiers`` mode: Qt watches every socket the
    select() poller watches, with a QSocketNotifier per socket and
    direction; the first to fire disables them all until a poll step leaves
    no work over, then they are brought in line with the poller's set."""

    wakeup = "notifiers"

    def __init__(self, server: Any) -> None:
        from PySide6.QtCore import QSocketNotifier, Qt, QTimer

        from wsserver.poller import READ, WRITE

        self.server, self.kinds = server, {READ: QSocketNotifier.Type.Read, WRITE: QSocketNotifier.Type.Write}
        self.Notifier = QSocketNotifier
        self.notifiers: dict[tuple[int, int], Any] = {}
        self.step = QTimer()
        self.step.setSingleShot(True)
        self.step.timeout.connect(self.poll)
        self.deadline = QTimer()
        self.deadline.setSingleShot(True)
        self.deadline.setTimerType(Qt.TimerType.PreciseTimer)
        self.deadline.timeout.connect(lambda: self.step.start(0))
        self.step.start(0)

    def fired(self) -> None:
        for notifier in self.notifiers.values():
            notifier.setEnabled(False)
        self.step.start(0)

    def poll(self) -> None:
        if self.server.poll(0):
            self.step.start(0)
            return
        wanted = {(fd, kind) for fd, (_, events) in self.server.reactor.poller._watched.items() for kind in self.kinds if events & kind}
        for key in list(self.notifiers):
            if key not in wanted:
                self.notifiers.pop(key).setEnabled(False)
        for key in wanted:
            notifier = self.notifiers.get(key)
            if notifier is None:
                notifier = self.notifiers[key] = self.Notifier(key[0], self.kinds[key[1]])
                notifier.activated.connect(self.fired)
            notifier.setEnabled(True)
        deadline = self.server.next_deadline()
        if deadline is None:
            self.deadline.stop()
        else:
            self.deadline.start(max(0, int((deadline - time.monotonic()) * 1000) + 1))

    def detach(self) -> None:
        self.step.stop()
        self.deadline.stop()
        for notifier in self.notifiers.values():
            notifier.setEnabled(False)
        self.notifiers.clear()


def measure(toolkit: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    if mode == "descriptor":
        env.pop("WSSERVER_POLLER", None)
    else:
        env["WSSERVER_POLLER"] = "select"
    command = [sys.executable, __file__, "--child", toolkit, mode, "--busy", str(args.busy), "--samples", str(args.samples), "--idle", str(args.idle)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.busy * 0.05 + args.samples * args.idle + 120)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"toolkit": toolkit, "mode": mode, "error": (done.stderr or done.stdout).strip()[-500:]}
    return dict(json.loads(lines[-1]), toolkit=toolkit, mode=mode)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| toolkit | wake-up | busy round trip, median | first round trip after an idle pause, median | polls per second while idle |",
        "| --- | --- | --- | --- | --- |",
    ]
    label = {
        "descriptor": "descriptor (epoll)",
        "thread": "waker thread (select)",
        "timer": "timer (select)",
        "notifiers": "a QSocketNotifier per socket (select, prototype)",
    }
    for row in rows:
        if row.get("error") == "notifiers: Qt only":
            continue
        if "error" in row:
            lines.append(f"| {row['toolkit']} | {label[row['mode']]} | failed: {row['error'].splitlines()[-1] if row['error'] else '?'} | | |")
            continue
        lines.append(
            f"| {row['toolkit']} | {label[row['mode']]} | {row['busy_ms']:.2f} ms | {row['after_idle_ms']:.2f} ms | {row['idle_polls_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolkits", default=",".join(TOOLKITS), help="tk, qt or both (default)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)} (default: all)")
    parser.add_argument("--busy", type=int, default=1000, help="echoes timed back to back (default 1000)")
    parser.add_argument("--samples", type=int, default=3, help="idle pauses, each followed by one timed echo (default 3)")
    parser.add_argument("--idle", type=float, default=2.5, help="seconds of each idle pause (default 2.5)")
    parser.add_argument("--child", nargs=2, metavar=("TOOLKIT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(*args.child, args.busy, args.samples, args.idle)), flush=True)
        return 0
    toolkits = [t for t in args.toolkits.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    if set(toolkits) - set(TOOLKITS) or set(modes) - set(MODES):
        parser.error("unknown toolkit or mode")

    sys.path.insert(0, str(ROOT / "tests"))
    from xvfb import Xvfb

    rows = []
    with Xvfb():
        for toolkit in toolkits:
            for mode in modes:
                row = measure(toolkit, mode, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
