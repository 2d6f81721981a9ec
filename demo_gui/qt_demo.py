"""A Qt (PySide6) window that serves a chat page and talks with every browser that opens it.

    python demo_gui/qt_demo.py               # page on http://127.0.0.1:8765/
    python demo_gui/qt_demo.py --lan         # every interface; phones join by scanning the QR code it shows

The server runs on the GUI thread, pumped by ``wsserver.adapters.qt``: no
threads, and the window stays responsive however busy the clients are.
Quitting says goodbye (1001) to every browser.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

import wsserver
from chatroom import ChatRoom, Member, parse_command_line
from wsserver.adapters import qt as qt_adapter
from wsserver.lan import qr_matrix

LOG_LINES = 500
COLUMNS = ("Name", "Address", "Since", "In", "Out")
QR_MODULE = 4  # pixels per QR module


class QrCode(QWidget):
    """A QR code's modules, painted (dark on white)."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix: list[list[bool]] = []

    def show_text(self, text: str) -> None:
        self.matrix = qr_matrix(text)
        side = len(self.matrix) * QR_MODULE
        self.setFixedSize(side, side)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802  (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("white"))
        for y, row in enumerate(self.matrix):
            for x, dark in enumerate(row):
                if dark:
                    painter.fillRect(QRect(x * QR_MODULE, y * QR_MODULE, QR_MODULE, QR_MODULE), QColor("black"))
        painter.end()


class QtChatWindow(QWidget):
    """The window: clients, live log, publish box; it follows a :class:`ChatRoom`."""

    def __init__(self, server: wsserver.Server | None = None, pair: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("wsserver chat (Qt)")
        self.resize(640, 480)
        self.items: dict[int, QTreeWidgetItem] = {}

        self.url = QLabel()
        self.url.setOpenExternalLinks(True)
        self.url.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QApplication.clipboard().setText(self.page_url))
        self.count = QLabel("0 clients")
        top = QHBoxLayout()
        top.addWidget(QLabel("Open in a browser:"))
        top.addWidget(self.url)
        top.addWidget(copy)
        top.addStretch()
        top.addWidget(self.count)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for column, width in enumerate((110, 150, 80, 60, 60)):
            self.tree.setColumnWidth(column, width)
        self.close_button = QPushButton("Close selected client")
        self.close_button.clicked.connect(self._close_selected)
        # JSON-RPC into every page: each answer lands in the log below.
        self.ask_button = QPushButton("Ask every page")
        self.ask_button.clicked.connect(lambda: self.room.ask_pages())
        self.revoke_button = QPushButton("Revoke device")
        self.revoke_button.clicked.connect(self._revoke_selected)
        self.revoke_button.setVisible(pair)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.revoke_button)
        buttons.addWidget(self.ask_button)
        buttons.addWidget(self.close_button)
        clients = QWidget()
        clients_layout = QVBoxLayout(clients)
        clients_layout.setContentsMargins(0, 0, 0, 0)
        # With pairing on: the QR code of the next pairing link, right of the list.
        self.qr = QrCode()
        self.pairing_link = ""
        qr_panel = QWidget()
        qr_layout = QVBoxLayout(qr_panel)
        qr_layout.addWidget(self.qr)
        qr_layout.addWidget(QLabel("Scan to join\n(works once)"), alignment=Qt.AlignmentFlag.AlignHCenter)
        qr_layout.addStretch()
        qr_panel.setVisible(pair)
        list_and_code = QHBoxLayout()
        list_and_code.addWidget(self.tree)
        list_and_code.addWidget(qr_panel)
        clients_layout.addLayout(list_and_code)
        clients_layout.addLayout(buttons)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(clients)
        splitter.addWidget(self.log)
        splitter.setStretchFactor(1, 2)

        self.entry = QLineEdit()
        self.entry.setPlaceholderText("Message every client")
        self.entry.returnPressed.connect(self._publish)
        self.publish_button = QPushButton("Publish to all")
        self.publish_button.clicked.connect(self._publish)
        bottom = QHBoxLayout()
        bottom.addWidget(self.entry)
        bottom.addWidget(self.publish_button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter)
        layout.addLayout(bottom)
        self.page_url = ""
        self.room = ChatRoom(self, server, pair)

    # -- RoomView ------------------------------------------------------------

    def member_changed(self, member: Member) -> None:
        values = (member.label, member.address, member.since.strftime("%H:%M:%S"), str(member.received), str(member.sent))
        item = self.items.get(member.id)
        if item is None:
            item = self.items[member.id] = QTreeWidgetItem(self.tree)
            item.setData(0, Qt.ItemDataRole.UserRole, member.id)
            for column in (3, 4):
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self._show_count()
        for column, value in enumerate(values):
            item.setText(column, value)

    def member_left(self, member: Member) -> None:
        item = self.items.pop(member.id, None)
        if item is not None:
            self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
            self._show_count()

    def logged(self, line: str) -> None:
        self.log.appendPlainText(line)

    def draft(self) -> str:
        return self.entry.text()

    def show_pairing(self, link: str) -> None:
        self.pairing_link = link
        self.qr.show_text(link)

    # -- actions -------------------------------------------------------------

    def show_url(self, url: str) -> None:
        self.page_url = url
        self.url.setText(f'<a href="{url}">{url}</a>')

    def _publish(self) -> None:
        self.room.publish(self.entry.text())
        self.entry.clear()

    def _close_selected(self) -> None:
        for item in self.tree.selectedItems():
            self.room.close_member(item.data(0, Qt.ItemDataRole.UserRole))

    def _revoke_selected(self) -> None:
        for item in self.tree.selectedItems():
            self.room.revoke_member(item.data(0, Qt.ItemDataRole.UserRole))

    def _show_count(self) -> None:
        n = len(self.items)
        self.count.setText(f"{n} client{'s' if n != 1 else ''}")


def main(argv: list[str] | None = None) -> int:
    host, port, pair = parse_command_line(__doc__.splitlines()[0], argv)

    app = QApplication(sys.argv[:1])
    window = QtChatWindow(pair=pair)
    try:
        window.room.start(host, port)
    except OSError as exc:
        QMessageBox.critical(None, "wsserver chat", f"Cannot listen on port {port}: {exc}")
        return 1
    window.show_url(window.room.page_url())
    qt_adapter.attach(window.room.server)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
