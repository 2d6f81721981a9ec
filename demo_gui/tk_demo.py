"""A Tk window that serves a chat page and talks with every browser that opens it.

    python demo_gui/tk_demo.py               # page on http://127.0.0.1:8765/
    python demo_gui/tk_demo.py --lan         # every interface; phones join by scanning the QR code it shows

The server runs on the Tk thread, pumped by ``wsserver.adapters.tk``: no
threads, and the window stays responsive however busy the clients are.
Closing the window says goodbye (1001) to every browser.
"""

from __future__ import annotations

import sys
import tkinter
import webbrowser
from tkinter import messagebox, ttk

import wsserver
from chatroom import ChatRoom, Member, parse_command_line
from wsserver.adapters import tk as tk_adapter
from wsserver.lan import qr_matrix

LOG_LINES = 500
QR_MODULE = 4  # pixels per QR module
COLUMNS = (("name", "Name", 110), ("address", "Address", 150), ("since", "Since", 80), ("in", "In", 60), ("out", "Out", 60))


class TkChatWindow:
    """The window: clients, live log, publish box; it follows a :class:`ChatRoom`."""

    def __init__(self, root: tkinter.Tk, server: wsserver.Server | None = None, pair: bool = False) -> None:
        self.root = root
        self.alive = True
        root.title("wsserver chat (Tk)")
        root.geometry("640x480")
        root.minsize(480, 360)
        # Bound before the adapter attaches, so it runs first: once the
        # window goes, the room's last callbacks must not touch its widgets.
        root.bind("<Destroy>", self._on_destroy, add="+")

        top = ttk.Frame(root, padding=(10, 8))
        top.pack(fill="x")
        ttk.Label(top, text="Open in a browser:").pack(side="left")
        self.url = ttk.Label(top, text="", foreground="#2f6fdf", cursor="hand2", font=("TkDefaultFont", 10, "underline"))
        self.url.pack(side="left", padx=6)
        self.url.bind("<Button-1>", lambda _: webbrowser.open(self.url["text"]))
        ttk.Button(top, text="Copy", width=6, command=self._copy_url).pack(side="left")
        self.count = ttk.Label(top, text="0 clients")
        self.count.pack(side="right")

        panes = ttk.PanedWindow(root, orient="vertical")
        panes.pack(fill="both", expand=True, padx=10)
        clients = ttk.Frame(panes)
        # With pairing on: the QR code of the next pairing link, right of the list.
        self.qr_panel = ttk.Frame(clients, padding=(8, 0, 0, 0))
        self.qr = tkinter.Canvas(self.qr_panel, width=0, height=0, highlightthickness=0, background="white")
        self.qr.pack()
        ttk.Label(self.qr_panel, text="Scan to join\n(works once)", justify="center").pack()
        self.pairing_link = ""
        self.tree = ttk.Treeview(clients, columns=[c[0] for c in COLUMNS], show="headings", height=5, selectmode="browse")
        for key, title, width in COLUMNS:
            self.tree.heading(key, text=title)
            self.tree.column(key, width=width, anchor="e" if key in ("in", "out") else "w")
        self.tree.pack(fill="both", expand=True)
        buttons = ttk.Frame(clients)
        buttons.pack(fill="x", pady=(4, 6))
        self.close_button = ttk.Button(buttons, text="Close selected client", command=self._close_selected)
        self.close_button.pack(side="right")
        # JSON-RPC into every page: each answer lands in the log below.
        self.ask_button = ttk.Button(buttons, text="Ask every page", command=lambda: self.room.ask_pages())
        self.ask_button.pack(side="right", padx=(0, 6))
        self.revoke_button = ttk.Button(buttons, text="Revoke device", command=self._revoke_selected)
        if pair:
            self.revoke_button.pack(side="right", padx=(0, 6))
            self.qr_panel.pack(side="right", anchor="n", before=self.tree)
        panes.add(clients, weight=1)

        log_frame = ttk.Frame(panes)
        self.log = tkinter.Text(log_frame, height=8, wrap="word", state="disabled", relief="flat", background="#fbfbfb")
        scroll = ttk.Scrollbar(log_frame, command=self.log.yview)
        self.log["yscrollcommand"] = scroll.set
        scroll.pack(side="right", fill="y")
        self.log.pack(fill="both", expand=True)
        panes.add(log_frame, weight=2)

        bottom = ttk.Frame(root, padding=(10, 8))
        bottom.pack(fill="x")
        self.entry = ttk.Entry(bottom)
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", lambda _: self._publish())
        self.publish_button = ttk.Button(bottom, text="Publish to all", command=self._publish)
        self.publish_button.pack(side="left", padx=(6, 0))

        self.room = ChatRoom(self, server, pair)

    # -- RoomView ------------------------------------------------------------

    def member_changed(self, member: Member) -> None:
        if not self.alive:
            return
        values = (member.label, member.address, member.since.strftime("%H:%M:%S"), member.received, member.sent)
        iid = str(member.id)
        if self.tree.exists(iid):
            self.tree.item(iid, values=values)
        else:
            self.tree.insert("", "end", iid=iid, values=values)
            self._show_count()

    def member_left(self, member: Member) -> None:
        if self.alive and self.tree.exists(str(member.id)):
            self.tree.delete(str(member.id))
            self._show_count()

    def logged(self, line: str) -> None:
        if not self.alive:
            return
        log = self.log
        log.configure(state="normal")
        log.insert("end", line + "\n")
        excess = int(log.index("end-1c").split(".")[0]) - LOG_LINES
        if excess > 0:
            log.delete("1.0", f"{excess + 1}.0")
        log.configure(state="disabled")
        log.see("end")

    def draft(self) -> str:
        return self.entry.get()

    def show_pairing(self, link: str) -> None:
        if not self.alive:
            return
        self.pairing_link = link
        matrix = qr_matrix(link)
        canvas = self.qr
        canvas.delete("all")
        canvas.configure(width=len(matrix) * QR_MODULE, height=len(matrix) * QR_MODULE)
        for y, row in enumerate(matrix):
            for x, dark in enumerate(row):
                if dark:
                    canvas.create_rectangle(x * QR_MODULE, y * QR_MODULE, (x + 1) * QR_MODULE, (y + 1) * QR_MODULE, fill="black", width=0)

    # -- actions -------------------------------------------------------------

    def show_url(self, url: str) -> None:
        self.url["text"] = url

    def _copy_url(self) -> None:
        self.root.clipboard_clear()
        self.root.clipboard_append(self.url["text"])

    def _publish(self) -> None:
        self.room.publish(self.entry.get())
        self.entry.delete(0, "end")

    def _close_selected(self) -> None:
        for iid in self.tree.selection():
            self.room.close_member(int(iid))

    def _revoke_selected(self) -> None:
        for iid in self.tree.selection():
            self.room.revoke_member(int(iid))

    def _show_count(self) -> None:
        n = len(self.tree.get_children())
        self.count["text"] = f"{n} client{'s' if n != 1 else ''}"

    def _on_destroy(self, event: tkinter.Event) -> None:
        if event.widget is self.root:
            self.alive = False


def main(argv: list[str] | None = None) -> int:
    host, port, pair = parse_command_line(__doc__.splitlines()[0], argv)

    root = tkinter.Tk()
    window = TkChatWindow(root, pair=pair)
    try:
        window.room.start(host, port)
    except OSError as exc:
        messagebox.showerror("wsserver chat", f"Cannot listen on port {port}: {exc}")
        return 1
    window.show_url(window.room.page_url())
    tk_adapter.attach(window.room.server, root)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
