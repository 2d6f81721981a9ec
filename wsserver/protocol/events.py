"""Events that :class:`~wsserver.protocol.connection.Connection` returns for
the bytes it was fed.

:class:`Message` and :class:`Fragment` are also what the application's
``on_message`` and ``on_fragment`` callbacks receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .frames import Opcode

__all__ = ["Message", "Fragment", "Ping", "Pong", "CloseReceived", "Failure", "Event"]


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message. ``type`` is 1 (``data`` is ``str``) or 2 (``data`` is ``bytes``)."""

    type: int
    data: str | bytes

    @property
    def is_text(self) -> bool:
        return self.type == Opcode.TEXT


@dataclass(frozen=True, slots=True)
class Fragment:
    """One frame of a message, delivered as it arrives.

    ``type`` is 1 (text) or 2 (binary) on the first fragment and 0 on the
    ones that continue it; ``fin`` is true on the last. Text fragments carry
    ``str``: a character split across two frames is delivered whole with the
    second one.
    """

    type: int
    data: str | bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a Close frame (1005 when it carried no code)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The peer broke the protocol; a Close frame with ``code`` is queued and
    the connection parses no more input."""

    code: int
    reason: str


Event = Union[Message, Fragment, Ping, Pong, CloseReceived, Failure]  # noqa: UP007  (a runtime alias: kept a typing.Union)
