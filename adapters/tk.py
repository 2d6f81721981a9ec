"""Run a :class:`wsserver.Server` inside a Tkinter main loop, on the Tk thread.

    import tkinter, wsserver
    from wsserver.adapters import tk as tk_adapter

    root = tkinter.Tk()
    server = wsserver.Server()
    server.start("127.0.0.1", 8765)
    tk_adapter.attach(server, root)
    root.mainloop()            # destroying root stops the server

On Unix the reactor's descriptor is watched with ``createfilehandler``, so
an idle program sleeps until a client or a protocol timer needs it; on
Windows (no descriptor) the adapter pumps with ``after()``, every 2 ms while
traffic flows and every 50 ms while it is quiet. See :mod:`._pump` for the
policy.
"""

from __future__ import annotations

import tkinter
from typing import TYPE_CHECKING

from ._pump import Pump, milliseconds

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wsserver import Server

    from ._pump import PumpOptions

__all__ = ["attach", "TkPump"]


class TkPump(Pump):
    """The handle :func:`attach` returns; :meth:`detach` stops pumping."""

    def __init__(self, server: Server, root: tkinter.Misc, *, stop_on_destroy: bool = True, **options: Unpack[PumpOptions]) -> None:
        # createfilehandler exists only where Tcl can watch descriptors (Unix).
        if not hasattr(root.tk, "createfilehandler"):
            options["use_fileno"] = False
        super().__init__(server, **options)
        self.root = root
        self.stop_on_destroy = stop_on_destroy
        self._step_id: str | None = None
        self._deadline_id: str | None = None
        self._destroy_binding: str | None = None
        self._toplevel: tkinter.Misc | None = None

    def start(self) -> None:
        toplevel = self._toplevel = self.root.winfo_toplevel()
        # A binding on a toplevel also fires for each of its children, so
        # the handler looks at event.widget.
        self._destroy_binding = toplevel.bind("<Destroy>", self._on_destroy, add="+")
        super().start()

    def detach(self) -> None:
        """Stop pumping the server (it keeps running; poll it some other way or stop it)."""
        if not self.attached:
            return
        super().detach()
        if self._destroy_binding is not None:
            self._unbind_destroy(self._destroy_binding)
            self._destroy_binding = None

    def _unbind_destroy(self, funcid: str) -> None:
        # Misc.unbind(sequence, funcid) would also drop the application's own
        # <Destroy> bindings on the toplevel (before Python 3.13): remove
        # only the line of the script that calls ours.
        toplevel = self._toplevel
        assert toplevel is not None
        script = toplevel.tk.call("bind", toplevel, "<Destroy>")
        kept = "\n".join(line for line in str(script).split("\n") if funcid not in line)
        toplevel.tk.call("bind", toplevel, "<Destroy>", kept)
        toplevel.deletecommand(funcid)

    def _on_destroy(self, event: tkinter.Event) -> None:
        if str(event.widget) != str(self._toplevel) or not self.attached:
            return
        self._destroy_binding = None  # it goes with the window
        self.detach()
        if self.stop_on_destroy:
            self.server.stop()

    # -- toolkit primitives ------------------------------------------------

    def _watch(self, on: bool) -> None:
        assert self.fd is not None  # the pump watches only when there is a descriptor
        if on:
            self.root.tk.createfilehandler(self.fd, tkinter.READABLE, self._file_event)
        else:
            self.root.tk.deletefilehandler(self.fd)

    def _file_event(self, fd: int, mask: int) -> None:
        self._on_readable()

    def _set_step_timer(self, delay: float | None) -> None:
        if self._step_id is not None:
            self.root.after_cancel(self._step_id)
            self._step_id = None
        if delay is None:
            return
        if delay == 0:
            self._step_id = self.root.after_idle(self._step_fired)
        else:
            self._step_id = self.root.after(milliseconds(delay), self._step_fired)

    def _step_fired(self) -> None:
        self._step_id = None
        self._on_step_timer()

    def _set_deadline_timer(self, delay: float | None) -> None:
        if self._deadline_id is not None:
            self.root.after_cancel(self._deadline_id)
            self._deadline_id = None
        if delay is not None:
            self._deadline_id = self.root.after(milliseconds(delay), self._deadline_fired)

    def _deadline_fired(self) -> None:
        self._deadline_id = None
        self._on_deadline_timer()


def attach(
    server: Server,
    root: tkinter.Misc,
    *,
    stop_on_destroy: bool = True,
    use_fileno: bool = True,
    busy_interval: float = 0.002,
    idle_interval: float = 0.05,
) -> TkPump:
    """Pump ``server`` from ``root``'s Tk main loop and return the handle.

    Destroying ``root``'s toplevel window detaches the adapter and, with
    ``stop_on_destroy``, stops the server: every client gets a 1001 Close
    frame and ``on_client_closed`` runs for each before the window is gone.
    ``use_fileno=False`` pumps with ``after()`` even where a descriptor
    exists, as on Windows, every ``busy_interval`` seconds while traffic flows
    and every ``idle_interval`` seconds while it is quiet.
    """
    pump = TkPump(
        server,
        root,
        stop_on_destroy=stop_on_destroy,
        use_fileno=use_fileno,
        busy_interval=busy_interval,
        idle_interval=idle_interval,
    )
    pump.start()
    return pump
