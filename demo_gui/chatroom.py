"""The demo programs' server side, free of any toolkit: a chat room.

Browsers load the chat page from ``/`` on the same port and talk JSON over
WebSocket. Each chat line a client sends is relayed to everyone, and a
newcomer first gets the last lines; the desktop window can publish to all
and close a client. The Tk and Qt windows only
draw what a :class:`ChatRoom` tells its :class:`RoomView`.

Wire format (text frames, JSON objects):
  client -> server  {"name": "Ana", "text": "hello"}
  server -> client  {"kind": "chat", "from": "Ana", "text": "hello", "at": "14:03"}
                    {"kind": "info", "text": "Ana joined (3 online)", "at": "14:03"}

Beside the chat, the same connections speak JSON-RPC (``wsserver.rpc``,
and ``/wsserver-rpc.js`` in the page): the page calls ``desktop.draft()``,
which reads what is typed in the window's publish box, and the window's
"Ask every page" button calls ``page.status()`` in every page and logs the
answers as they come.

Pages keep their session through a drop (``wsserver.resume``): a phone
that slept comes back to the room with every line it missed, and what it
sent meanwhile arrives once.

With ``--lan`` the room is for phones: the window shows a QR code of a
one-time pairing link, and only paired devices (and this machine) get the
page or a WebSocket; a paired device can be revoked from the client list.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import wsserver
from wsserver.http.pairing import PairedDevice, Pairing
from wsserver.lan import lan_bind_address
from wsserver.resume import ResumePolicy
from wsserver.rpc import JsonRpc, RpcError

PAGE = pathlib.Path(__file__).with_name("chat.html")
DESKTOP_NAME = "Desktop"
MAX_NAME = 40
MAX_TEXT = 2000
HISTORY = 50  # chat lines a newcomer is shown
SURVEY_TIMEOUT = 5.0  # seconds a page has to answer "Ask every page"


@dataclass
class Member:
    """One connected client as the window lists it."""

    id: int
    address: str
    since: datetime.datetime = field(default_factory=datetime.datetime.now)
    name: str = ""
    received: int = 0  # messages from this client
    sent: int = 0  # messages to this client
    device: str | None = None  # the paired device it connected from (with pairing on)

    @property
    def label(self) -> str:
        return self.name or f"guest {self.id}"


class RoomView(Protocol):
    """What a window implements to follow the room; called on the GUI thread."""

    def member_changed(self, member: Member) -> None:
        """A member joined, or its name or counters changed."""

    def member_left(self, member: Member) -> None: ...

    def logged(self, line: str) -> None:
        """One line for the live log."""

    def draft(self) -> str:
        """The text typed in the publish box now (pages read it over JSON-RPC)."""
        ...

    def show_pairing(self, link: str) -> None:
        """Show the QR code of ``link``, the one-time link the next device pairs with."""


class ChatRoom:
    """A :class:`wsserver.Server` that relays chat lines between browsers and the window."""

    def __init__(self, view: RoomView, server: wsserver.Server | None = None, pair: bool = False) -> None:
        self.view = view
        self.server = server or wsserver.Server(resume=ResumePolicy())
        self.members: dict[int, Member] = {}
        self.history: collections.deque[str] = collections.deque(maxlen=HISTORY)
        self.page = PAGE.read_text(encoding="utf-8")
        server = self.server
        server.on_open = self._on_open
        server.on_message = self._on_message
        server.on_client_closed = self._on_client_closed
        server.on_resumed = self._on_resumed
        server.on_error = self._on_error
        server.before_stop = self._on_stopping
        self.stopping = False
        server.http_server.route("/", handler=lambda request: self.page)
        self.rpc = JsonRpc(server, {"desktop": {"draft": self._draft}})
        self.pairing: Pairing | None = None
        if pair:
            self.pairing = Pairing(server.http_server, on_paired=self._paired)
            server.http_server.guard = self.pairing.guard
            server.on_upgrade_to_websocket = self.pairing.admit

    def start(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.server.start(host, port)
        self.stopping = False
        self.view.logged(f"serving {self.page_url()}")
        if self.pairing is not None:
            self.new_pairing_link()

    def page_url(self) -> str:
        """The chat page's address; the LAN address when bound to all interfaces."""
        return self.server.http_server.get_url(use_lan_ip=True) or ""

    # -- what the window asks for ------------------------------------------

    def publish(self, text: str) -> None:
        """Send a chat line from the desktop to every client."""
        text = text.strip()[:MAX_TEXT]
        if text:
            self._broadcast({"kind": "chat", "from": DESKTOP_NAME, "text": text})
            self.view.logged(f"{DESKTOP_NAME}: {text}")

    def new_pairing_link(self) -> str:
        """A new one-time link for the next device, shown by the window."""
        assert self.pairing is not None
        link = self.pairing.new_link(self.page_url())
        self.view.show_pairing(link)
        return link

    def revoke_member(self, member_id: int) -> None:
        """Unpair the device a member connected from, and close every
        connection it has."""
        member = self.members.get(member_id)
        if self.pairing is None or member is None or member.device is None:
            return
        self.pairing.revoke(member.device)
        self.view.logged(f"revoked the device of {member.label}")
        for other in list(self.members.values()):
            if other.device == member.device:
                self.server.close(other.id, 1008, "this device was unpaired")

    def close_member(self, member_id: int) -> None:
        member = self.members.get(member_id)
        if member is not None:
            self.server.close(member_id, 1000, "closed from the desktop")
            self.view.logged(f"closing {member.label}")

    def ask_pages(self) -> int:
        """Call ``page.status()`` in every page; each answer (or error) is
        logged when it comes, and the window never waits. The pages asked."""
        asked = self.rpc.survey("page.status", on_result=self._page_answered, on_error=self._page_failed, timeout=SURVEY_TIMEOUT)
        self.view.logged(f"asking {len(asked)} page{'s' if len(asked) != 1 else ''}")
        return len(asked)

    # -- JSON-RPC ----------------------------------------------------------

    def _draft(self, *, client: wsserver.Client) -> str:
        self.view.logged(f"{self._label(client)} read the publish box")
        return self.view.draft()

    def _page_answered(self, client: wsserver.Client, status: Any) -> None:
        # A page's answer is its own JSON: shown, never trusted to have a shape.
        self.view.logged(f"{self._label(client)}'s page: {json.dumps(status, ensure_ascii=False)[:200]}")

    def _page_failed(self, client: wsserver.Client, error: RpcError) -> None:
        self.view.logged(f"{self._label(client)}'s page did not answer: {error}")

    def _paired(self, device: PairedDevice) -> None:
        self.view.logged(f"paired a device at {device.address}")
        self.new_pairing_link()

    def _label(self, client: wsserver.Client) -> str:
        member = self.members.get(client.id)
        return member.label if member is not None else f"guest {client.id}"

    # -- server callbacks --------------------------------------------------

    def _on_open(self, client: wsserver.Client) -> None:
        host, port = client.remote_address[:2]
        device = self.pairing.device(client.request) if self.pairing is not None else None
        member = Member(client.id, f"{host}:{port}", device=device.id if device is not None else None)
        self.members[client.id] = member
        for line in self.history:
            client.send(line)
        member.sent += len(self.history)
        self.view.member_changed(member)
        self._broadcast({"kind": "info", "text": f"{member.label} joined ({len(self.members)} online)"})

    def _on_message(self, client: wsserver.Client, message: wsserver.Message) -> None:
        member = self.members[client.id]
        member.received += 1
        line = _parse_line(message.data)
        if line is None:
            self.view.member_changed(member)
            self.view.logged(f"{member.label}: (not a chat line, {len(message.data)} bytes)")
            return
        name, text = line
        if name and name != member.name:
            member.name = name
        self._broadcast({"kind": "chat", "from": member.label, "text": text})
        self.view.logged(f"{member.label}: {text}")

    def _on_resumed(self, client: wsserver.Client) -> None:
        self.view.logged(f"{self._label(client)} came back (nothing missed)")

    def _on_client_closed(self, client: wsserver.Client) -> None:
        member = self.members.pop(client.id, None)
        if member is None:
            return
        self.view.member_left(member)
        self.view.logged(f"{member.label} left (code {client.close_code})")
        if not self.stopping:
            self._broadcast({"kind": "info", "text": f"{member.label} left ({len(self.members)} online)"})

    def _on_stopping(self) -> None:
        self.stopping = True
        self.view.logged("server stopping")

    def _on_error(self, client: wsserver.Client | None, exc: BaseException) -> None:
        self.view.logged(f"error on {client!r}: {exc}")

    def _broadcast(self, event: dict[str, Any]) -> None:
        event["at"] = datetime.datetime.now().strftime("%H:%M")
        line = json.dumps(event)
        if event["kind"] == "chat":
            self.history.append(line)
        self.server.publish(line)
        for member in self.members.values():
            client = self.server.client(member.id)
            if client is not None and (client.is_connected or client.is_away):
                member.sent += 1
                self.view.member_changed(member)


def _parse_line(data: str | bytes) -> tuple[str, str] | None:
    """``(name, text)`` from a client's JSON chat line, or None if it is not one."""
    if not isinstance(data, str):
        return None
    try:
        line = json.loads(data)
    except ValueError:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("text"), str):
        return None
    name = line.get("name")
    name = name.strip()[:MAX_NAME] if isinstance(name, str) else ""
    text = line["text"].strip()[:MAX_TEXT]
    return (name, text) if text else None


def parse_command_line(description: str, argv: list[str] | None = None) -> tuple[str, int, bool]:
    """The host and port a demo window listens on, and whether it pairs
    devices (``--lan``), from its command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--lan", action="store_true", help="bind every interface (IPv4 and IPv6) and let devices on the LAN join by scanning a pairing QR code")
    args = parser.parse_args(argv)
    return (lan_bind_address() if args.lan else args.host), args.port, args.lan
