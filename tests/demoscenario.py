"""One scenario for both demo programs (Tk and Qt), through a small driver
that each GUI test module supplies: the page is served, clients are listed,
chat is relayed and logged, the window publishes and closes a client, and
closing the program says 1001 to the rest."""

from __future__ import annotations

import http.client
import importlib
import json
import pathlib
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from conftest import DEADLINE, Worker
from guiclients import ListeningClient, start_clients

DEMO_DIR = pathlib.Path(__file__).resolve().parent.parent / "demo_gui"


def load_demo(name: str) -> Any:
    """Import a demo module the way ``python demo_gui/<name>.py`` finds its siblings."""
    sys.path.insert(0, str(DEMO_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DEMO_DIR))


class DemoDriver(Protocol):
    room: Any

    def attach(self) -> None: ...
    def pump_until(self, condition: Callable[[], Any], what: str) -> None: ...
    def rows(self) -> list[tuple[str, ...]]: ...
    def log_text(self) -> str: ...
    def publish(self, text: str) -> str:
        """Type ``text``, press the publish button; return what the entry holds after."""
    def close_first_row(self) -> None: ...
    def close_window(self) -> None: ...
    def type_draft(self, text: str) -> None:
        """Type ``text`` in the publish box without publishing it."""
    def ask_pages(self) -> None:
        """Press the "Ask every page" button."""
    def pairing_link(self) -> str:
        """The link whose QR code the window shows."""
    def qr_modules(self) -> list[list[bool]]:
        """The QR code as the window draws it (True: dark)."""
    def revoke_first_row(self) -> None: ...


def demo_scenario(driver: DemoDriver) -> None:
    room = driver.room
    room.start("127.0.0.1", 0)
    driver.attach()
    closed: list[int] = []
    room.server.add_listener("close", lambda client: closed.append(client.id))

    def fetch_page() -> tuple[int, str]:
        host, port = room.server.get_local_ip()
        connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read().decode()

    page = Worker(fetch_page)
    page.start()
    driver.pump_until(lambda: not page.is_alive(), "the chat page")
    status, html = page.outcome()
    assert status == 200 and "<title>Desktop chat</title>" in html

    clients: list[ListeningClient] = []
    for n in (1, 2):  # one after the other, so that clients[0] is the first row
        newcomer = start_clients(room.server.get_url("chat"), 1)[0]
        clients.append(newcomer)
        driver.pump_until(lambda n=n, c=newcomer: len(driver.rows()) == n and c.connected.is_set(), f"row {n}")

    def last_text(client: ListeningClient) -> str | None:
        return json.loads(client.messages[-1])["text"] if client.messages else None

    clients[0].send(json.dumps({"name": "Ana", "text": "hi all"}))
    driver.pump_until(lambda: all(last_text(c) == "hi all" for c in clients), "the relayed chat line")
    assert "Ana: hi all" in driver.log_text()
    name, address, _since, received, _sent = driver.rows()[0]
    assert (name, received) == ("Ana", "1")
    assert address.startswith("127.0.0.1:")

    assert driver.publish("hello from the window") == ""
    driver.pump_until(lambda: all(last_text(c) == "hello from the window" for c in clients), "the published line")

    driver.close_first_row()
    driver.pump_until(lambda: not clients[0].is_alive() and len(driver.rows()) == 1, "the closed client to go")
    assert clients[0].close_code == 1000

    driver.close_window()
    clients[1].join(DEADLINE)
    assert clients[1].close_code == 1001
    assert sorted(closed) == [1, 2]
    for client in clients:
        client.check()


# The chat page in headless Chromium: once online, it presses "Ask the
# desktop" and hands back the info line the answer shows.
ASK_THE_DESKTOP = """new Promise((resolve) => {
  const log = document.getElementById("log");
  const online = () => document.getElementById("state").className === "open";
  const answered = () => [...log.querySelectorAll("li.info")].map((li) => li.textContent).find((t) => t.startsWith("The desktop is typing"));
  const wait = (condition, then) => condition() ? then() : setTimeout(() => wait(condition, then), 10);
  wait(online, () => { document.getElementById("ask").click(); wait(answered, () => resolve(answered())); });
})"""


def demo_rpc_scenario(driver: DemoDriver, profile: pathlib.Path) -> None:
    """The JSON-RPC panel, both ways: the page reads the window's publish
    box, and the window's button asks every page for its status."""
    from chromium import Chromium

    room = driver.room
    room.start("127.0.0.1", 0)
    driver.attach()
    driver.type_draft("half a thought")
    asked, done = threading.Event(), threading.Event()

    def browse() -> Any:
        with Chromium(profile, DEADLINE) as browser:
            session = browser.open(str(room.server.http_server.get_url()))
            answer = browser.evaluate(session, ASK_THE_DESKTOP)
            asked.set()
            done.wait(DEADLINE)  # the page stays open until the window has asked it
            return answer

    page = Worker(browse)
    page.start()
    try:
        driver.pump_until(lambda: asked.is_set() or not page.is_alive(), "the page to ask the desktop")
        assert "guest 1 read the publish box" in driver.log_text()
        driver.ask_pages()
        driver.pump_until(lambda: "guest 1's page: " in driver.log_text(), "the page's answer")
        status = json.loads(driver.log_text().split("guest 1's page: ", 1)[1].splitlines()[0])
        assert status == {"name": "", "lines": 2, "visible": True}
    finally:
        done.set()
        driver.pump_until(lambda: not page.is_alive(), "the browser to close")
    assert page.outcome().startswith("The desktop is typing: \u201chalf a thought\u201d")
    driver.close_window()


def demo_pairing_scenario(driver: DemoDriver, as_strangers: Callable[[], Any]) -> None:
    """With --lan: the window shows the QR code of a one-time link; a device
    that is not paired gets neither the page nor a WebSocket; the link pairs
    it (and the code moves on to a new link), and revoking its row closes
    it and keeps it out. ``as_strangers()`` makes this machine's loopback
    clients count as other devices."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from qrread import read_qr

    room = driver.room
    room.start("127.0.0.1", 0)
    driver.attach()
    as_strangers()
    host, port = room.server.get_local_ip()
    link = driver.pairing_link()
    assert link.startswith(f"http://{host}:{port}/pair/") and read_qr(driver.qr_modules()) == [link]

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        worker = Worker(fn, *args)
        worker.start()
        driver.pump_until(lambda: not worker.is_alive(), fn.__name__)
        return worker.outcome()

    def get(path: str) -> tuple[int, str | None]:
        connection = http.client.HTTPConnection(host, port, timeout=DEADLINE)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.getheader("Set-Cookie")
        finally:
            connection.close()

    def upgrade(cookie: str | None) -> int:
        """The status of an upgrade: 101, or the refusal's."""
        try:
            with connect(room.server.get_url("chat"), additional_headers={"Cookie": cookie} if cookie else {}, open_timeout=DEADLINE):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run(get, "/")[0] == 403 and run(upgrade, None) == 403
    status, cookie = run(get, "/" + link.split("/", 3)[3])
    assert status == 303 and cookie is not None
    session = cookie.partition(";")[0]
    driver.pump_until(lambda: driver.pairing_link() != link, "a new link once the first is spent")
    assert read_qr(driver.qr_modules()) == [driver.pairing_link()] and run(get, "/" + link.split("/", 3)[3])[0] == 403

    def stay(cookie: str) -> int | None:
        """Stay connected until the server closes; its close code."""
        with connect(room.server.get_url("chat"), additional_headers={"Cookie": cookie}, open_timeout=DEADLINE) as ws:
            try:
                while True:
                    ws.recv(timeout=DEADLINE)
            except ConnectionClosed:
                return ws.close_code

    paired = Worker(stay, session)
    paired.start()
    driver.pump_until(lambda: len(driver.rows()) == 1, "the paired device's row")
    driver.revoke_first_row()
    driver.pump_until(lambda: not driver.rows() and not paired.is_alive(), "the revoked device to be closed")
    assert paired.outcome() == 1008
    assert run(upgrade, session) == 403 and "revoked the device of guest" in driver.log_text()
    driver.close_window()
