"""The service's error: an HTTP status and a body that names the field, index and reason."""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses; nothing of it was stored.

    The body has FastAPI's validation shape, ``{"detail": [{"loc": [...], "msg": ..., "type":
    ...}]}``, so a client handles every 4xx the same way; ``extra`` adds fields to the item
    (e.g. ``expected_cycle``).
    """

    def __init__(self, status: int, loc: list, msg: str, type_: str, **extra) -> None:
        super().__init__(msg)
        self.status = status
        self.detail = [{"loc": loc, "msg": msg, "type": type_, **extra}]

    def body(self) -> dict:
        return {"detail": self.detail}
