"""Wake a GUI thread when a socket is ready, where the reactor has no descriptor.

On Linux and macOS a GUI loop watches the reactor's one descriptor (epoll,
kqueue) and sleeps until a socket is ready. Windows' ``select()`` has no
such descriptor, and pumping ``poll()`` on a timer instead costs a timer
tick of latency on every exchange (15.6 ms on Windows) and wakes the
program all the time it is idle.

A :class:`WakerThread` closes that gap with one helper thread. It blocks in
``select()`` on the reactor's sockets (:meth:`SelectPoller.wait
<wsserver.poller.SelectPoller.wait>`); when one is ready it calls
``notify`` once, which asks the GUI thread to poll, and then waits until
the GUI thread calls :meth:`~WakerThread.arm` after that poll before it
selects again. So readiness that stays (level-triggered ``select()``) never
turns into a busy loop, and the program wakes only when there is work.

The thread reads and writes no socket of the reactor, runs no protocol or
application code, and touches no GUI object: all of that stays on the GUI
thread. ``notify`` must be safe to call from another thread; the adapters
send one byte on a socket that the GUI loop watches (a Tcl channel for Tk,
a ``QSocketNotifier`` for Qt) or use ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .poller import SelectPoller

if TYPE_CHECKING:
    from .server import Server

__all__ = ["WakerThread"]

logger = logging.getLogger("wsserver")


class WakerThread:
    """Calls ``notify`` (on its own thread) when a socket of ``server`` is
    ready; at most once until :meth:`arm` is called again.

    It starts disarmed: call :meth:`arm` after the first ``poll()``, and
    after each poll that left no work over.
    """

    #: Seconds between checks, while disarmed, that the server still runs.
    CLOSED_CHECK = 1.0

    def __init__(self, server: Server, notify: Callable[[], None]) -> None:
        poller = server.reactor.poller
        if not isinstance(poller, SelectPoller):
            raise TypeError("a WakerThread serves a reactor without a descriptor (select(), as on Windows); watch server.fileno() instead")
        self._poller = poller
        self._notify = notify
        self._armed = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="wsserver-waker", daemon=True)
        #: How many times it has called ``notify``.
        self.wakeups = 0

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def arm(self) -> None:
        """Select again: the GUI thread has polled since the last ``notify``."""
        self._armed.set()

    def close(self) -> None:
        """Stop the thread; ``notify`` is not called after this returns."""
        self._stopped = True
        self._armed.set()
        self._poller.interrupt()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            # It only ever blocks in select(), which the interruption ends.
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        poller = self._poller
        while True:
            # Disarmed, it waits for the GUI thread's poll; a server shut
            # down meanwhile is never polled again, so look now and then.
            while not self._armed.wait(self.CLOSED_CHECK):
                if poller.closed:
                    return
            if self._stopped or poller.closed:
                return
            if not poller.wait():
                continue  # the set changed: select again on the new one
            self._armed.clear()
            if self._stopped:
                return
            self.wakeups += 1
            try:
                self._notify()
            except Exception:
                # The GUI side is gone (its loop closed, its socket shut).
                logger.exception("the waker thread could not wake the GUI thread; it stops")
                return
