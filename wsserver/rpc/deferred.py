"""A method's result that the program gives later: :class:`Deferred`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Deferred"]

_PENDING, _RESOLVED, _REJECTED, _CANCELLED = "pending", "resolved", "rejected", "cancelled"


class Deferred:
    """Return one from a method whose result is not ready: a dialog the
    user answers, a file a worker thread reads, a timer. The call's answer
    is sent when the program calls :meth:`resolve` or :meth:`reject`, and
    ``poll()`` goes on serving everyone meanwhile.

    Both may be called from any thread: the answer itself is always sent
    from the thread that polls the server, at its next step. The first of
    them counts; later ones, and any after the caller disconnected
    (:attr:`cancelled`), do nothing and return False.

    A method may also return a :class:`concurrent.futures.Future` (what
    ``executor.submit()`` gives): it is answered when the future is done,
    and cancelled if the caller disconnects first.
    """

    __slots__ = ("_lock", "_state", "_value", "_on_settled", "_on_cancel")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _PENDING
        self._value: Any = None
        self._on_settled: Callable[[Deferred], Any] | None = None
        self._on_cancel: list[Callable[[], Any]] = []

    def resolve(self, result: Any = None) -> bool:
        """Answer the call with ``result`` (any JSON value)."""
        return self._settle(_RESOLVED, result)

    def reject(self, error: BaseException) -> bool:
        """Answer the call with an error: an :class:`~wsserver.rpc.RpcError`
        as it is, any other exception as ``Internal error`` (its details go
        to ``on_error``, not to the caller)."""
        return self._settle(_REJECTED, error)

    @property
    def done(self) -> bool:
        """True once resolved, rejected or cancelled."""
        return self._state != _PENDING

    @property
    def cancelled(self) -> bool:
        """True when the caller went away before the answer: there is no
        one left to answer, and work done only for it may stop."""
        return self._state == _CANCELLED

    def add_cancel_callback(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` if the caller goes away before the answer
        (on the polling thread); at once if it already has."""
        with self._lock:
            if self._state == _PENDING:
                self._on_cancel.append(callback)
                return
            cancelled = self._state == _CANCELLED
        if cancelled:
            callback()

    # -- for JsonRpc ---------------------------------------------------------

    @property
    def outcome(self) -> tuple[bool, Any]:
        """(True, result) or (False, error), once settled."""
        return self._state == _RESOLVED, self._value

    def when_settled(self, callback: Callable[[Deferred], Any]) -> None:
        """Call ``callback(self)`` once it is resolved or rejected, on the
        thread that settles it (at once if it already is)."""
        with self._lock:
            if self._state == _PENDING:
                self._on_settled = callback
                return
            settled = self._state != _CANCELLED
        if settled:
            callback(self)

    def cancel(self) -> list[Callable[[], Any]]:
        """Mark it cancelled if still pending; the cancel callbacks to run."""
        with self._lock:
            if self._state != _PENDING:
                return []
            self._state = _CANCELLED
            self._on_settled = None
            callbacks, self._on_cancel = self._on_cancel, []
        return callbacks

    def _settle(self, state: str, value: Any) -> bool:
        with self._lock:
            if self._state != _PENDING:
                return False
            self._state, self._value = state, value
            callback, self._on_settled = self._on_settled, None
            self._on_cancel = []
        if callback is not None:
            callback(self)
        return True
