"""The one error hierarchy. The core raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class DunctlError(Exception):
    """Something the user can fix. The message names the offending thing and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class Uncertain(DunctlError):
    """An effect that may or may not have happened: the other side may have acted on a request whose answer never
    came. It must not be repeated silently: the executor records the action's outcome as `unknown`, for a person
    to resolve (`dunctl case resolve`). Each kind says what that means for it in `consequence`."""

    consequence = "it may have happened, so it will not be run again"


class ConfigError(DunctlError):
    """The configuration, a sequence or a template is invalid. Nothing was changed."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem] | str, hint: str | None = None):
        if isinstance(problems, str):
            problems = [ConfigProblem(file="", path="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems), hint)


class ConfigProblem:
    """One validation error: the file, the key path inside it, and what is wrong or allowed."""

    def __init__(self, file: str, path: str, message: str, line: int | None = None):
        self.file, self.path, self.message, self.line = file, path, message, line

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
        if self.path:
            where += f" {self.path}" if where else self.path
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {"file": self.file, "path": self.path, "line": self.line, "message": self.message}


class UsageError(DunctlError):
    """A command was called with arguments that cannot work (unknown invoice, bad date)."""

    exit_code = 2


class StaleLedger(DunctlError):
    """The Stripe account shows actions dunctl took that this ledger has no record of: the ledger is older than
    the account (restored from a backup, or a new ledger for an account dunctl already works on)."""

    exit_code = 2


class LockHeld(DunctlError):
    """Another tick holds the ledger's lock."""

    exit_code = 3


class GatewayError(DunctlError):
    """The payment provider failed in a way that a later tick may get past (outage, rate limit)."""

    def __init__(self, message: str, request_id: str | None = None, code: str | None = None,
                 hint: str | None = None):
        super().__init__(message, hint)
        self.request_id = request_id
        self.code = code


class GatewayAuthError(GatewayError):
    """The key is missing, wrong, or lacks a permission: the tick stops, nothing further is attempted."""


class OutOfTime(GatewayError):
    """The tick's budget ran out before a request was sent: nothing left dunctl, so the effect is not a failed
    try. The executor gives its claim back and it stays due for the next tick."""


class WriteUncertain(GatewayError, Uncertain):
    """A write to Stripe may have taken effect, and reading the object back could not tell: no answer came to the
    write (or a 5xx, which does not say whether the work was done), then the read failed too. Never tried again
    under a new key (a second charge, a second write-off): a person looks at the Dashboard."""

    consequence = "it may have taken effect at Stripe, so it will not be tried again"


class CardDeclined(GatewayError):
    """A payment attempt was declined; carries the new decline so the case can be re-classified."""

    def __init__(self, message: str, decline, request_id: str | None = None):
        super().__init__(message, request_id=request_id, code=getattr(decline, "code", None))
        self.decline = decline


class ChannelError(DunctlError):
    """A message could not be delivered (SMTP down, webhook 500). Recorded on the action, retried later."""


class DeliveryUncertain(ChannelError, Uncertain):
    """The request may have reached the other side: the connection timed out or dropped after the message was
    handed over (SMTP: once the server took DATA; HTTP: once the request was written), before the answer came.

    The message may or may not have gone out. It must not be re-sent silently: the executor records the
    action's outcome as `unknown`, for a person to resolve. Plain ChannelError means nothing left.
    """

    consequence = "it may have been delivered, so it will not be re-sent"
