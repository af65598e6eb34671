"""The one error tree: every error a client can be answered with, carrying its wire status and code.

Raising a `GatewayError` anywhere below the dispatcher turns into exactly one error response
(`to_wire`); anything else that escapes is a bug and becomes `500 INTERNAL_ERROR`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error answered to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, data: Any = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def to_wire(self, ext_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "extID": ext_id,
            "status": self.status,
            "error": self.code,
            "message": self.message,
        }
        if self.data is not None:
            body["data"] = self.data
        return body


class InvalidJson(GatewayError):
    status, code, default_message = 400, "INVALID_JSON", "frame is not a valid UTF-8 JSON object"


class InvalidRequest(GatewayError):
    status, code, default_message = 400, "INVALID_REQUEST", "invalid request envelope"


class UnknownCommand(GatewayError):
    status, code, default_message = 404, "UNKNOWN_COMMAND", "unknown command"


class InvalidData(GatewayError):
    status, code, default_message = 400, "INVALID_DATA", "invalid data"


class InvalidToken(GatewayError):
    status, code, default_message = 401, "INVALID_TOKEN", "missing or invalid token"


class PermissionDenied(GatewayError):
    status, code, default_message = 403, "PERMISSION_DENIED", "permission denied"


class UserNotFound(GatewayError):
    status, code, default_message = 404, "USER_NOT_FOUND", "user not found"


class TradeNotFound(GatewayError):
    status, code, default_message = 404, "TRADE_NOT_FOUND", "trade with specified order not found"


class GroupNotFound(GatewayError):
    status, code, default_message = 404, "GROUP_NOT_FOUND", "group not found"


class UserExists(GatewayError):
    status, code, default_message = 409, "USER_EXISTS", "user with this login exists"


class NotEnoughMoney(GatewayError):
    status, code, default_message = 400, "NOT_ENOUGH_MONEY", "balance would go below zero"


class NotEnoughCredit(GatewayError):
    status, code, default_message = 400, "NOT_ENOUGH_CREDIT", "credit would go below zero"


class FrameTooLarge(GatewayError):
    status, code, default_message = 413, "FRAME_TOO_LARGE", "frame exceeds max_frame_bytes"

    def __init__(
        self, message: str | None = None, *, data: Any = None, completed: list[bytes] | None = None
    ) -> None:
        super().__init__(message, data=data)
        #: Frames that were complete before the oversized one, in the same feed.
        self.completed = completed or []


class IdempotencyMismatch(GatewayError):
    status, code = 422, "IDEMPOTENCY_MISMATCH"
    default_message = "extID was already used with a different command or data"


class TooManyRequests(GatewayError):
    status, code, default_message = 429, "TOO_MANY_REQUESTS", "too many requests in flight"


class InternalError(GatewayError):
    status, code, default_message = 500, "INTERNAL_ERROR", "internal error"


class ShuttingDown(GatewayError):
    status, code, default_message = 503, "SHUTTING_DOWN", "server is shutting down"


class SyncTimeout(GatewayError):
    status, code, default_message = 504, "SYNC_TIMEOUT", "no matching trade event before timeout"
