"""A program with its own loop: wsserver beside the program's own descriptors.

    python examples/custom_loop.py            # then type lines: each goes to every client

A loop that has nothing else to wait for only needs::

    while running:
        server.poll(0.5)        # waits at most 0.5 s for the network, then returns

A loop that also waits on descriptors of its own (here: standard input)
selects on the server's ``fileno()`` together with them, sleeps no longer
than ``next_deadline()``, and polls without waiting when something is ready.
``poll()`` is budgeted: when it returns True, work is left over and the next
turn must not sleep. (Windows' ``select`` takes sockets only and the reactor
has no descriptor there: use the first pattern, or an adapter.)
"""

from __future__ import annotations

import os
import select
import sys
import time

import wsserver


def publish_lines(server: wsserver.Server, source: int) -> int:
    """Publish every line read from descriptor ``source`` to every client,
    serving the network in between, until ``source`` reaches end of file.
    Return the number of lines published."""
    network = server.fileno()
    if network is None:
        raise OSError("the reactor has no descriptor on this platform")
    pending = b""
    published = 0
    busy = True  # serve whatever is already waiting before the first sleep
    while True:
        if busy:
            timeout: float | None = 0.0
        else:
            deadline = server.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([network, source], [], [], timeout)
        # Cheap when nothing is ready; serves the network and due timers otherwise.
        busy = server.poll(0.0)
        if source in readable:
            data = os.read(source, 65536)
            if not data:
                return published
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                server.publish(line.decode("utf-8", "replace"))
                published += 1


def main() -> int:
    server = wsserver.Server()
    server.on_open = lambda client: print(f"{client!r} joined", flush=True)
    server.on_message = lambda client, message: print(f"{client!r}: {message.data!r}", flush=True)
    server.start("127.0.0.1", 8765)
    print(f"clients connect to {server.get_url()}; type lines to publish, end with Ctrl-D", flush=True)
    try:
        publish_lines(server, sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
