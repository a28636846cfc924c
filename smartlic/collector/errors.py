"""What the collector's domain raises when it will not do what it was asked.

Every refusal is a :class:`Refused` with a message a person can act on (the CLI prints it as
one line and exits 1). Where a device is the one refused (registration, for instance), the
refusal carries the wire :class:`~smartlic.protocol.ErrorCode` its error notice will carry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smartlic.protocol import ErrorCode


class Refused(Exception):  # noqa: N818 -- names what happened; each subclass is a kind of refusal
    """The operation is not allowed, or the state does not permit it; nothing was changed."""

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(Refused):
    """Something named in the request does not exist (or is not visible to the actor)."""


class PermissionDenied(Refused):
    """The acting user lacks a permission; the message names it and the scope."""

    def __init__(self, message: str, *, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


class InvalidRequest(Refused):
    """A value is well-formed but breaks a domain rule (a name too long, a count of zero)."""
