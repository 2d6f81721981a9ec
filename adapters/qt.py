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
work left over after a budgeted ``poll()`` resumes from a zero-interval
timer, behind the input and paint events already queued. Works with a
``QApplication`` or a bare ``QCoreApplication``. Install with the ``qt``
extra (``pip install 'wsserver[qt]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QSocketNotifier, Qt, QTimer

from ._pump import Pump, milliseconds

if TYPE_CHECKING:
    from wsserver import Server

__all__ = ["attach", "QtPump"]


class QtPump(Pump):
    """The handle :func:`attach` returns; :meth:`detach` stops pumping."""

    def __init__(self, server: Server, app: QCoreApplication, *, stop_on_quit: bool = True, **options: object) -> None:
        super().__init__(server, **options)  # type: ignore[arg-type]
        self.app = app
        self.stop_on_quit = stop_on_quit
        self._notifier: QSocketNotifier | None = None
        if self.fd is not None:
            self._notifier = QSocketNotifier(self.fd, QSocketNotifier.Type.Read)
            self._notifier.setEnabled(False)
            self._notifier.activated.connect(self._on_readable)
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

    def _set_step_timer(self, delay: float | None) -> None:
        _arm(self._step_timer, delay)

    def _set_deadline_timer(self, delay: float | None) -> None:
        _arm(self._deadline_timer, delay)


# Qt holds its connections to Python methods weakly: without this, a pump
# whose handle the program drops would be collected and stop pumping.
_attached: set[QtPump] = set()


def _single_shot(callback: object, kind: Qt.TimerType) -> QTimer:
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
    use_fileno: bool = True,
    busy_interval: float = 0.002,
    idle_interval: float = 0.05,
) -> QtPump:
    """Pump ``server`` from the Qt event loop of ``app`` (default: the running
    ``QCoreApplication.instance()``) and return the handle.

    With ``stop_on_quit``, ``aboutToQuit`` stops the server: every client
    gets a 1001 Close frame and ``on_client_closed`` runs for each before
    ``exec()`` returns. ``use_fileno=False`` pumps on a timer, as where the
    reactor has no descriptor: every ``busy_interval`` seconds while traffic
    flows, every ``idle_interval`` seconds while it is quiet.
    """
    app = app or QCoreApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication (or QCoreApplication) before attaching a server")
    pump = QtPump(
        server,
        app,
        stop_on_quit=stop_on_quit,
        use_fileno=use_fileno,
        busy_interval=busy_interval,
        idle_interval=idle_interval,
    )
    pump.start()
    return pump
