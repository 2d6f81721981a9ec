"""Run a :class:`wsserver.Server` inside a Tkinter main loop, on the Tk thread.

    import tkinter, wsserver
    from wsserver.adapters import tk as tk_adapter

    root = tkinter.Tk()
    server = wsserver.Server()
    server.start("127.0.0.1", 8765)
    tk_adapter.attach(server, root)
    root.mainloop()            # destroying root stops the server

On Linux and macOS the reactor's descriptor is watched with
``createfilehandler``, so an idle program sleeps until a client or a
protocol timer needs it. On Windows, where the reactor has no descriptor
and Tk cannot watch one, a waker thread (:mod:`wsserver.waker`) blocks in
``select()`` on the reactor's sockets and wakes Tk through a Tcl socket
channel, which Tcl watches on every platform. See :mod:`._pump` for the
policy.
"""

from __future__ import annotations

import socket
import tkinter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._pump import Pump, Wakeup, milliseconds

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from wsserver import Server

    from ._pump import PumpOptions

__all__ = ["attach", "TkPump"]


class TkPump(Pump):
    """The handle :func:`attach` returns; :meth:`detach` stops pumping."""

    def __init__(self, server: Server, root: tkinter.Misc, *, stop_on_destroy: bool = True, **options: Unpack[PumpOptions]) -> None:
        super().__init__(server, **options)
        self.root = root
        self.stop_on_destroy = stop_on_destroy
        self._step_id: str | None = None
        self._deadline_id: str | None = None
        self._destroy_binding: str | None = None
        self._toplevel: tkinter.Misc | None = None
        # wakeup="thread": the Tcl channel the waker thread writes to, the
        # Tcl command its fileevent calls, and the Python end.
        self._channel: str | None = None
        self._channel_command: str | None = None
        self._channel_peer: socket.socket | None = None

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

    def _open_signal(self) -> Callable[[], None]:
        # Tk has no way to watch a descriptor on Windows (no
        # createfilehandler), but Tcl watches its own sockets everywhere
        # (fileevent, on Windows through WSAAsyncSelect): Tcl connects to a
        # one-off loopback listener, and the waker writes to the other end.
        tk = self.root.tk
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            channel = str(tk.call("socket", "127.0.0.1", listener.getsockname()[1]))
            try:
                peer = _accept_from(listener, int(tk.splitlist(tk.call("fconfigure", channel, "-sockname"))[2]))
            except BaseException:
                tk.call("close", channel)
                raise
        peer.setblocking(False)
        tk.call("fconfigure", channel, "-blocking", 0, "-translation", "binary")
        self._channel, self._channel_peer = channel, peer
        self._channel_command = self.root.register(self._channel_readable)
        tk.call("fileevent", channel, "readable", self._channel_command)

        def notify() -> None:
            try:
                peer.send(b"\0")
            except BlockingIOError:
                pass  # a byte is waiting already: Tcl will see the channel readable

        return notify

    def _channel_readable(self) -> None:
        self.root.tk.call("read", self._channel)  # what is there (non-blocking)
        self._on_readable()

    def _close_signal(self) -> None:
        assert self._channel is not None and self._channel_peer is not None and self._channel_command is not None
        try:
            self.root.tk.call("close", self._channel)  # its fileevent goes with it
            self.root.deletecommand(self._channel_command)
        except tkinter.TclError:
            pass  # the interpreter is being deleted, and the channel with it
        self._channel_peer.close()
        self._channel = self._channel_command = self._channel_peer = None

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


def _accept_from(listener: socket.socket, port: int) -> socket.socket:
    """The connection from our own Tcl channel (local port ``port``), which
    is already queued; any other process's attempt is dropped."""
    listener.setblocking(False)
    while True:
        sock, address = listener.accept()  # BlockingIOError: it never came
        if address[1] == port:
            return sock
        sock.close()


def attach(
    server: Server,
    root: tkinter.Misc,
    *,
    stop_on_destroy: bool = True,
    wakeup: Wakeup = "auto",
    busy_interval: float = 0.002,
    idle_interval: float = 0.05,
) -> TkPump:
    """Pump ``server`` from ``root``'s Tk main loop and return the handle.

    Destroying ``root``'s toplevel window detaches the adapter and, with
    ``stop_on_destroy``, stops the server: every client gets a 1001 Close
    frame and ``on_client_closed`` runs for each before the window is gone.
    ``wakeup`` says how the adapter learns that there is work (see
    :class:`~wsserver.adapters._pump.Pump`): the default watches the
    reactor's descriptor, or runs a waker thread where there is none
    (Windows). ``wakeup="timer"`` polls with ``after()`` instead, every
    ``busy_interval`` seconds while traffic flows and every
    ``idle_interval`` seconds while it is quiet.
    """
    pump = TkPump(
        server,
        root,
        stop_on_destroy=stop_on_destroy,
        wakeup=wakeup,
        busy_interval=busy_interval,
        idle_interval=idle_interval,
    )
    pump.start()
    return pump
