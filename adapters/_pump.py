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
* Where the reactor has no descriptor (``select`` on Windows), it polls on a
  timer instead: every ``busy_interval`` while the network was active in the
  last ``linger`` seconds, every ``idle_interval`` otherwise.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypedDict

    from wsserver import Server

    class PumpOptions(TypedDict, total=False):
        """The keyword options of :class:`Pump`, as a subclass passes them on."""

        use_fileno: bool
        busy_interval: float
        idle_interval: float
        linger: float

__all__ = ["Pump", "milliseconds"]


class Pump:
    """Pumps ``server`` from a host event loop; subclasses bind the toolkit.

    :param use_fileno: watch the reactor's descriptor when it has one; False
        forces timer pumping (what happens where there is no descriptor).
    :param busy_interval: seconds between timer-driven polls while the
        network is active (timer pumping only).
    :param idle_interval: seconds between timer-driven polls while it is quiet.
    :param linger: how long after the last network activity pumping stays fast.
    """

    def __init__(
        self,
        server: Server,
        *,
        use_fileno: bool = True,
        busy_interval: float = 0.002,
        idle_interval: float = 0.05,
        linger: float = 1.0,
    ) -> None:
        self.server = server
        self.fd = server.fileno() if use_fileno else None
        self.busy_interval = busy_interval
        self.idle_interval = idle_interval
        self.linger = linger
        self.attached = False
        self._watching = False
        self._armed_deadline: float | None = None

    # -- what a subclass supplies ------------------------------------------

    def _watch(self, on: bool) -> None:
        """Start or stop calling :meth:`_on_readable` when ``self.fd`` is readable."""
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
        elif self.fd is not None:
            self._set_watching(True)
        else:
            active = time.monotonic() - self.server.reactor.last_activity < self.linger
            self._set_step_timer(self.busy_interval if active else self.idle_interval)
        self._arm_deadline()

    # -- internals -----------------------------------------------------------

    def _set_watching(self, on: bool) -> None:
        if on != self._watching and self.fd is not None:
            self._watching = on
            self._watch(on)

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
