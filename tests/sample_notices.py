"""A valid collector message for tests that need one, whatever it says.

Shared by the protocol tests and the collector's intake tests: both check that a device cannot
pass off what only a collector sends.
"""

from __future__ import annotations

from smartlic.protocol import Authorization


def an_authorization(device_id: str) -> Authorization:
    """The smallest authorization: no tags, valid from 1 to 2."""
    return Authorization(
        device_id=device_id,
        notice_seq=1,
        issued_at=1,
        in_reply_to=None,
        virtual_account="default",
        valid_until=2,
        next_report_at=2,
        nonce=b"n" * 8,
        tags={},
    )
