"""What a failure says about the work that met it: wait and try again, or set it apart.

An outage is a failure of what the service depends on, the store or the crypto workers: the
same work succeeds once they are back, so it is tried again and nothing is acknowledged
meanwhile. Anything else is a fault in the work itself and would fail the same way every time;
the caller sets that work apart (a message becomes a dead letter, a change is skipped) so that
what comes behind it goes on.
"""

from __future__ import annotations

import structlog

from smartlic.collector.service.crypto import CryptoUnavailable
from smartlic.collector.store import ConstraintError, StoreError

log = structlog.get_logger("smartlic.collector")


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage (try again later) rather than a fault in the work.

    A broken constraint is a store error but not an outage: the same statements on the same
    data break it again.
    """
    if isinstance(exc, ConstraintError):
        return False
    return isinstance(exc, StoreError | CryptoUnavailable)


def log_outage(exc: BaseException, **context: object) -> None:
    event = "collector.store_failed" if isinstance(exc, StoreError) else "collector.crypto_failed"
    log.error(event, error=str(exc) or type(exc).__name__, **context)
