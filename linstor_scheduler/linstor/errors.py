"""LINSTOR errors: an ApiCallRc list turned into an exception an operator can read."""

from __future__ import annotations

from .models import ApiCallRc


class LinstorError(Exception):
    """A LINSTOR answer we cannot use; ``str()`` is one line: message (cause; correction)."""

    def __init__(self, message: str, *, status: int | None = None, replies: list[ApiCallRc] | None = None) -> None:
        self.status = status
        self.replies = replies or []
        first = next((r for r in self.replies if r.is_error), None)
        self.message = first.message if first else message
        self.cause = first.cause if first else None
        self.correction = first.correction if first else None
        super().__init__(self.describe())

    def describe(self) -> str:
        extra = "; ".join(x for x in (f"cause: {self.cause}" if self.cause else "",
                                      f"correction: {self.correction}" if self.correction else "") if x)
        status = f"HTTP {self.status}: " if self.status else ""
        return f"{status}{self.message}" + (f" ({extra})" if extra else "")


class LinstorUnavailable(LinstorError):
    """No controller answered usefully (connection errors, timeouts, 5xx) after retries/failover."""


class LinstorProtocolError(LinstorError):
    """A body that is not the JSON shape the API promises (garbage, wrong types)."""


class EventsNotSupported(LinstorError):
    """The controller has no such event stream (404): poll instead."""
