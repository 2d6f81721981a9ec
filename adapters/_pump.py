"""When to pump a server from a host event loop: the policy every adapter shares.

A :class:`Pump` is driven by three toolkit primitives that a subclass
supplies (watch a descriptor, one single-shot "step" timer, one single-shot
"deadline" timer) and decides everything else the same way for Tk, Qt and
asyncio:

* While idle it watches the reactor's ``fileno()`` and keeps one timer
  armed for :meth:`~wsserver.Server.next_deadline`, so the process sleeps
  until the network or a protocol timer needs it.
* When the descriptor fires it stops watching it and runs one budgeted
  ``poll()`` on the host loop's next idle turn. Polling straight from the
  descriptor callback would keep the host from serving its own due timers
  (Tk serves queued file events before expired timers), and deferring while
  still watching starves: the descriptor stays readable, so the loop is
  never idle.
* While ``poll()`` reports work left over, the next step is queued behind
  the host's pending input and redraws; once nothing is left it watches the
  descriptor again.
* Where the reactor has no descriptor (``select()`` on Windows), a
  :class:`~wsserver.waker.WakerThread` stands in for it: it blocks in
  ``select()`` on the reactor's sockets and signals the host loop through
  a channel the toolkit can watch (:meth:`Pump._open_signal`), once per
  poll. The thread does no I/O on the reactor's sockets and runs no
  protocol or application code.
* ``wakeup="timer"`` polls on a timer instead, as an explicit choice:
  every ``busy_interval`` while the network was active in the last
  ``linger`` seconds, every ``idle_interval`` otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from wsserver.waker import WakerThread

#: How a pump learns that the reactor has work: ``"auto"`` is the reactor's
#: descriptor where it has one and the waker thread where it has none.
Wakeup = Literal["auto", "descriptor", "thread", "timer"]

if TYPE_CHECKING:
    from typing import TypedDict

    from wsserver import Server

    class PumpOptions(TypedDict, total=False):
        """The keyword options of :class:`Pump`, as a subclass passes them on."""

        wakeup: Wakeup
        busy_interval: float
        idle_interval: float
        linger: float

__all__ = ["Pump", "Wakeup", "milliseconds"]


class Pump:
    """Pumps ``server`` from a host event loop; subclasses bind the toolkit.

    :param wakeup: ``"descriptor"`` watches the reactor's descriptor,
        ``"thread"`` a :class:`~wsserver.waker.WakerThread` (the reactor has
        no descriptor: Windows), ``"timer"`` polls on a timer; ``"auto"``
        (the default) picks the first of these two that fits the reactor.
    :param busy_interval: seconds between timer-driven polls while the
        network is active (timer pumping only).
    :param idle_interval: seconds between timer-driven polls while it is quiet.
    :param linger: how long after the last network activity pumping stays fast.
    """

    def __init__(
        self,
        server: Server,
        *,
        wakeup: Wakeup = "auto",
        busy_interval: float = 0.002,
        idle_interval: float = 0.05,
        linger: float = 1.0,
    ) -> None:
        fd = server.fileno()
        if wakeup == "auto":
            wakeup = "thread" if fd is None else "descriptor"
        elif wakeup == "descriptor" and fd is None:
            raise ValueError("this reactor has no descriptor (select(), as on Windows): use wakeup='thread' or 'timer'")
        elif wakeup == "thread" and fd is not None:
            raise ValueError("the waker thread serves a reactor without a descriptor; this one has one: use wakeup='descriptor'")
        elif wakeup not in ("descriptor", "thread", "timer"):
            raise ValueError(f"wakeup must be 'auto', 'descriptor', 'thread' or 'timer', not {wakeup!r}")
        self.server = server
        self.wakeup: Wakeup = wakeup
        self.fd = fd if wakeup == "descriptor" else None
        self.busy_interval = busy_interval
        self.idle_interval = idle_interval
        self.linger = linger
        self.attached = False
        self._watching = False
        self._armed_deadline: float | None = None
        #: The waker thread (``wakeup="thread"``) while attached.
        self.waker: WakerThread | None = None

    # -- what a subclass supplies ------------------------------------------

    def _watch(self, on: bool) -> None:
        """Start or stop calling :meth:`_on_readable` when ``self.fd`` is readable."""
        raise NotImplementedError

    def _open_signal(self) -> Callable[[], None]:
        """Open a channel the toolkit watches, whose readiness calls
        :meth:`_on_readable` on the loop's thread, and return the function
        the waker thread calls to make it ready (``wakeup="thread"``)."""
        raise NotImplementedError

    def _close_signal(self) -> None:
        """Close what :meth:`_open_signal` opened."""
        raise NotImplementedError

    def _set_step_timer(self, delay: float | None) -> None:
        """Arm the one-shot step timer to call :meth:`_on_step_timer`: after
        ``delay`` seconds, or with 0 on the loop's next idle turn (after the
        input and redraws already queued). None disarms it."""
        raise NotImplementedError

    def _set_deadline_timer(self, delay: float | None) -> None:
        """Arm the one-shot deadline timer to call :meth:`_on_deadline_timer`
        after at least ``delay`` seconds; None disarms it."""
        raise NotImplementedError

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Begin pumping. Work already waiting is served on the first idle turn."""
        self.attached = True
        if self.wakeup == "thread":
            # Disarmed until the first step has polled.
            self.waker = WakerThread(self.server, self._open_signal())
            self.waker.start()
        self._set_step_timer(0.0)

    def detach(self) -> None:
        """Stop pumping; no timer or descriptor callback of this pump runs after."""
        if not self.attached:
            return
        self.attached = False
        self._set_watching(False)
        self._set_step_timer(None)
        self._armed_deadline = None
        self._set_deadline_timer(None)
        if self.waker is not None:
            self.waker.close()
            self.waker = None
            self._close_signal()

    # -- events from the toolkit --------------------------------------------

    def _on_readable(self) -> None:
        if not self.attached:
            return
        self._set_watching(False)
        self._set_step_timer(0.0)

    def _on_deadline_timer(self) -> None:
        self._armed_deadline = None
        if self.attached:
            self._set_step_timer(0.0)

    def _on_step_timer(self) -> None:
        if not self.attached:
            return
        leftover = self.server.poll(0.0)
        if not self.attached:  # a callback detached us (or stopped the server)
            return
        if leftover:
            self._set_step_timer(0.0)
        elif self.wakeup != "timer":
            self._set_watching(True)
        else:
            active = time.monotonic() - self.server.reactor.last_activity < self.linger
            self._set_step_timer(self.busy_interval if active else self.idle_interval)
        self._arm_deadline()

    # -- internals -----------------------------------------------------------

    def _set_watching(self, on: bool) -> None:
        if on == self._watching or self.wakeup == "timer":
            return
        self._watching = on
        if self.waker is None:
            self._watch(on)
        elif on:
            self.waker.arm()  # it disarmed itself when it signalled

    def _arm_deadline(self) -> None:
        deadline = self.server.next_deadline()
        if deadline == self._armed_deadline:
            return
        self._armed_deadline = deadline
        self._set_deadline_timer(None if deadline is None else max(0.0, deadline - time.monotonic()))


def milliseconds(delay: float) -> int:
    """``delay`` seconds as whole milliseconds, rounded up so that a timer
    never fires before the deadline it stands for."""
    return max(0, math.ceil(delay * 1000.0))
