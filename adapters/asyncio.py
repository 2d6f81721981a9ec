"""Run a :class:`wsserver.Server` inside an asyncio event loop, on the loop's thread.

    import asyncio, wsserver
    from wsserver.adapters import asyncio as asyncio_adapter

    async def main():
        server = wsserver.Server()
        server.start("127.0.0.1", 8765)
        handle = asyncio_adapter.attach(server)
        try:
            await asyncio.Event().wait()       # the program's own work
        finally:
            handle.detach()
            server.stop()

    asyncio.run(main())

``loop.add_reader`` watches the reactor's descriptor (where the reactor has
none, on Windows, a waker thread calls ``call_soon_threadsafe`` instead, so
the proactor loop works too) and one ``call_later``
handle waits for the next protocol deadline (the reactor's clock and
asyncio's are both ``time.monotonic``); work left over after a budgeted
``poll()`` resumes with ``call_soon``, after the callbacks already queued.
Callbacks run on the loop's thread and must not block it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._pump import Pump, Wakeup

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wsserver import Server

    from ._pump import PumpOptions

__all__ = ["attach", "AsyncioPump"]


class AsyncioPump(Pump):
    """The handle :func:`attach` returns; :meth:`detach` stops pumping."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, **options: Unpack[PumpOptions]) -> None:
        super().__init__(server, **options)
        self.loop = loop
        self._step: asyncio.Handle | None = None
        self._deadline: asyncio.Handle | None = None

    def _watch(self, on: bool) -> None:
        assert self.fd is not None
        if on:
            self.loop.add_reader(self.fd, self._on_readable)
        else:
            self.loop.remove_reader(self.fd)

    def _open_signal(self) -> Callable[[], None]:
        def notify() -> None:
            self.loop.call_soon_threadsafe(self._on_readable)

        return notify

    def _close_signal(self) -> None:
        pass  # call_soon_threadsafe needs nothing opened

    def _set_step_timer(self, delay: float | None) -> None:
        self._step = self._rearm(self._step, delay, self._step_fired)

    def _step_fired(self) -> None:
        self._step = None
        self._on_step_timer()

    def _set_deadline_timer(self, delay: float | None) -> None:
        self._deadline = self._rearm(self._deadline, delay, self._deadline_fired)

    def _deadline_fired(self) -> None:
        self._deadline = None
        self._on_deadline_timer()

    def _rearm(self, handle: asyncio.Handle | None, delay: float | None, callback: Callable[[], None]) -> asyncio.Handle | None:
        if handle is not None:
            handle.cancel()
        if delay is None:
            return None
        if delay == 0:
            return self.loop.call_soon(callback)
        return self.loop.call_later(delay, callback)


def attach(
    server: Server,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    wakeup: Wakeup = "auto",
    busy_interval: float = 0.002,
    idle_interval: float = 0.05,
) -> AsyncioPump:
    """Pump ``server`` from ``loop`` (default: the running loop) and return the handle.

    ``wakeup`` is as for the other adapters (see
    :class:`~wsserver.adapters._pump.Pump`). On a loop that cannot watch
    descriptors (the Windows proactor loop) ``"auto"`` picks the waker
    thread, which needs a reactor without a descriptor as well (Windows);
    ``wakeup="timer"`` polls every ``busy_interval`` seconds while traffic
    flows and every ``idle_interval`` seconds while it is quiet.
    """
    loop = loop or asyncio.get_running_loop()
    pump = AsyncioPump(server, loop, wakeup=wakeup, busy_interval=busy_interval, idle_interval=idle_interval)
    pump.start()
    return pump
