"""The agent's errors, and what each refusal code of the collector means to a person.

After h11: :class:`LocalAgentError` means this program (or its operator) asked for something
the agent cannot do in its state — an illegal transition, registering twice, a state directory
that belongs to another device. :class:`StateFileError` says a file in the state directory
cannot be trusted, and what to do about it. Neither carries a traceback to the user: the CLI
prints the message on one line.
"""

from __future__ import annotations

from typing import Final

from smartlic.protocol import ErrorCode


class AgentError(Exception):
    """Base of every error the agent raises on purpose; ``str()`` is the whole message."""


class LocalAgentError(AgentError):
    """The agent was asked for something its state does not allow."""


class IllegalTransition(LocalAgentError):  # noqa: N818 -- h11's name for the same idea
    """A (state, event) pair the transition table has no entry for."""


class StateFileError(AgentError):
    """A file in the state directory is missing, unreadable or corrupted."""


class ConfigError(AgentError):
    """A configuration value or flag that cannot be used."""


_EXPLANATIONS: Final[dict[ErrorCode, str]] = {
    ErrorCode.TOKEN_UNKNOWN: (
        "the collector does not know this token: check that it was copied whole, "
        "from the collector this device talks to"
    ),
    ErrorCode.TOKEN_EXPIRED: "the token has expired: ask the administrator for a new one",
    ErrorCode.TOKEN_REVOKED: "the token was revoked: ask the administrator for a new one",
    ErrorCode.TOKEN_USED_UP: (
        "the token has been used as many times as it allows: ask for a new one"
    ),
    ErrorCode.TOKEN_HOLDING_ACCOUNT: (
        "the token belongs to a partner holding account, whose licenses cannot be consumed: "
        "ask for a token made in a customer virtual account"
    ),
    ErrorCode.PROOF_OF_POSSESSION: (
        "the collector could not verify that this device holds the key it registers "
        "(a damaged key file?)"
    ),
    ErrorCode.ALREADY_REGISTERED: (
        "a device with this UDI is already registered (perhaps with another key, after a "
        "reset or a lost answer): ask the administrator to deregister it, then register again"
    ),
    ErrorCode.CLOCK_SKEW: (
        "the collector refused this device's clock: set the time (NTP), then try again"
    ),
    ErrorCode.REPLAYED: "the collector has already seen a newer message from this device",
    ErrorCode.UNKNOWN_DEVICE: "the collector does not know this device",
    ErrorCode.NOT_REGISTERED: "the collector has no registration for this device",
    ErrorCode.WRONG_TOPIC: (
        "the message arrived on a topic that is not this device's (check topic_prefix)"
    ),
    ErrorCode.BAD_SIGNATURE: (
        "the collector could not verify this device's signature "
        "(it has another key on record for this UDI)"
    ),
}


def explain(code: ErrorCode, collector_message: str = "") -> str:
    """One sentence for a person: what the refusal ``code`` means and what to do."""
    text = _EXPLANATIONS.get(code)
    if text is None:
        text = collector_message or "the collector refused the request"
    elif collector_message:
        text = f"{text} (collector: {collector_message})"
    return f"{text} [{code.name}, {int(code)}]"
