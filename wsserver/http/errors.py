"""The one exception of the HTTP layer."""

from __future__ import annotations

__all__ = ["HttpError"]


class HttpError(Exception):
    """The request cannot be served; answer with ``status``. ``message`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
