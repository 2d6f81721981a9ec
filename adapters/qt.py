"""Run a :class:`wsserver.Server` inside a Qt (PySide6) event loop, on the GUI thread.

    from PySide6.QtWidgets import QApplication
    import wsserver
    from wsserver.adapters import qt as qt_adapter

    app = QApplication([])
    server = wsserver.Server()
    server.start("127.0.0.1", 8765)
    qt_adapter.attach(server)
    app.exec()                 # quitting the application stops the server

A ``QSocketNotifier`` watches the reactor's descriptor and one single-shot
``QTimer`` waits for the next protocol deadline, so an idle program sleeps;
on Windows, where the reactor has no descriptor, a waker thread
(:mod:`wsserver.waker`) blocks in ``select()`` on the reactor's sockets and
writes one byte to a socket pair whose other end the notifier watches;
work left over after a budgeted ``poll()`` resumes from a zero-interval
timer, behind the input and paint events already queued. Works with a
``QApplication`` or a bare ``QCoreApplication``. Install with the ``qt``
extra (``pip install 'wsserver[qt]'``).

:func:`attach` first checks that the PySide6 build keeps the interpreter's
reference counts (see :func:`check_pyside`): PySide6 6.12.0 on Python 3.11
and older aborts the process after a few thousand Qt calls.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import PySide6
from PySide6.QtCore import QCoreApplication, QSocketNotifier, Qt, QTimer

from ._pump import Pump, Wakeup, milliseconds

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wsserver import Server

    from ._pump import PumpOptions

__all__ = ["attach", "check_pyside", "BrokenPySideError", "QtPump"]


class BrokenPySideError(RuntimeError):
    """The installed PySide6 corrupts the interpreter's reference counts."""


# Calls of a Qt method that returns nothing, made by the self-test. A build
# that loses a reference on each loses them all; the margin absorbs what
# other threads may do to None's count meanwhile.
_PROBE_CALLS = 64


def _loses_none_references(call: Callable[[], object], calls: int = _PROBE_CALLS) -> bool:
    """Whether ``calls`` calls of ``call`` leave None with fewer references
    than before (at least half of one per call)."""
    before = sys.getrefcount(None)
    for _ in range(calls):
        call()
    return before - sys.getrefcount(None) >= calls // 2


def check_pyside() -> None:
    """Raise :class:`BrokenPySideError` if PySide6 drops references to None.

    PySide6 6.12.0 returns None from every wrapped method that returns
    nothing without counting the reference it hands out. Python 3.12 made
    None immortal, so it does no harm there; on Python 3.10 and 3.11 each
    call takes one reference away, and after a few thousand calls (a busy
    server makes several per message) the interpreter aborts with "Fatal
    Python error: none_dealloc", hours after start and with no hint of the
    cause. The check costs a few dozen calls of ``QTimer.stop()``; it cannot
    be compensated for from Python, since the application's own Qt calls
    leak the same way.
    """
    if _loses_none_references(QTimer().stop):
        python = ".".join(map(str, sys.version_info[:3]))
        raise BrokenPySideError(
            f"PySide6 {PySide6.__version__} on Python {python} loses a reference to None on every "
            "call of a Qt method that returns nothing; the process would abort after a few thousand "
            "calls (Fatal Python error: none_dealloc). Install another PySide6 "
            "(pip install 'PySide6-Essentials!=6.12.0', which wsserver[qt] resolves) "
            "or use Python 3.12 or newer."
        )


class QtPump(Pump):
    """The handle :func:`attach` returns; :meth:`detach` stops pumping."""

    def __init__(self, server: Server, app: QCoreApplication, *, stop_on_quit: bool = True, **options: Unpack[PumpOptions]) -> None:
        super().__init__(server, **options)
        self.app = app
        self.stop_on_quit = stop_on_quit
        self._notifier: QSocketNotifier | None = None
        if self.fd is not None:
            self._notifier = _notifier(self.fd, self._on_readable)
        # wakeup="thread": the socket pair the waker thread writes to.
        self._signal: tuple[socket.socket, socket.socket] | None = None
        self._step_timer = _single_shot(self._on_step_timer, Qt.TimerType.CoarseTimer)
        # Precise, so that it never fires before the deadline it stands for.
        self._deadline_timer = _single_shot(self._on_deadline_timer, Qt.TimerType.PreciseTimer)

    def start(self) -> None:
        self.app.aboutToQuit.connect(self._on_about_to_quit)
        _attached.add(self)
        super().start()

    def detach(self) -> None:
        """Stop pumping the server (it keeps running; poll it some other way or stop it)."""
        if not self.attached:
            return
        super().detach()
        self.app.aboutToQuit.disconnect(self._on_about_to_quit)
        _attached.discard(self)

    def _on_about_to_quit(self) -> None:
        self.detach()
        if self.stop_on_quit:
            self.server.stop()

    # -- toolkit primitives ------------------------------------------------

    def _watch(self, on: bool) -> None:
        assert self._notifier is not None
        self._notifier.setEnabled(on)

    def _open_signal(self) -> Callable[[], None]:
        # A QSocketNotifier watches sockets on every platform (on Windows
        # through WSAAsyncSelect), and socketpair() makes real sockets
        # there too. The notifier stays enabled: the waker writes one byte
        # per poll, and the slot reads it.
        reader, writer = self._signal = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._notifier = _notifier(reader.fileno(), self._signal_readable)
        self._notifier.setEnabled(True)

        def notify() -> None:
            try:
                writer.send(b"\0")
            except BlockingIOError:
                pass  # a byte is waiting already: the notifier will fire

        return notify

    def _signal_readable(self) -> None:
        assert self._signal is not None
        try:
            self._signal[0].recv(64)
        except BlockingIOError:
            pass  # read already (a notifier may fire once more)
        self._on_readable()

    def _close_signal(self) -> None:
        assert self._notifier is not None and self._signal is not None
        self._notifier.setEnabled(False)
        self._notifier = None
        for end in self._signal:
            end.close()
        self._signal = None

    def _set_step_timer(self, delay: float | None) -> None:
        _arm(self._step_timer, delay)

    def _set_deadline_timer(self, delay: float | None) -> None:
        _arm(self._deadline_timer, delay)


# Qt holds its connections to Python methods weakly: without this, a pump
# whose handle the program drops would be collected and stop pumping.
_attached: set[QtPump] = set()


def _notifier(fd: int, callback: Callable[[], None]) -> QSocketNotifier:
    notifier = QSocketNotifier(fd, QSocketNotifier.Type.Read)
    notifier.setEnabled(False)
    notifier.activated.connect(callback)
    return notifier


def _single_shot(callback: Callable[[], None], kind: Qt.TimerType) -> QTimer:
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setTimerType(kind)
    timer.timeout.connect(callback)
    return timer


def _arm(timer: QTimer, delay: float | None) -> None:
    if delay is None:
        timer.stop()
    else:
        timer.start(milliseconds(delay))


def attach(
    server: Server,
    app: QCoreApplication | None = None,
    *,
    stop_on_quit: bool = True,
    wakeup: Wakeup = "auto",
    busy_interval: float = 0.002,
    idle_interval: float = 0.05,
) -> QtPump:
    """Pump ``server`` from the Qt event loop of ``app`` (default: the running
    ``QCoreApplication.instance()``) and return the handle.

    With ``stop_on_quit``, ``aboutToQuit`` stops the server: every client
    gets a 1001 Close frame and ``on_client_closed`` runs for each before
    ``exec()`` returns. ``wakeup`` says how the adapter learns that there
    is work (see :class:`~wsserver.adapters._pump.Pump`): the default
    watches the reactor's descriptor, or runs a waker thread where there is
    none (Windows). ``wakeup="timer"`` polls on a timer instead: every
    ``busy_interval`` seconds while traffic flows, every ``idle_interval``
    seconds while it is quiet.

    Raises :class:`BrokenPySideError` on a PySide6 build that would abort
    the process later (see :func:`check_pyside`).
    """
    app = app or QCoreApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication (or QCoreApplication) before attaching a server")
    check_pyside()
    pump = QtPump(
        server,
        app,
        stop_on_quit=stop_on_quit,
        wakeup=wakeup,
        busy_interval=busy_interval,
        idle_interval=idle_interval,
    )
    pump.start()
    return pump
