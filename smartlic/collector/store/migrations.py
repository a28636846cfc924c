"""The schema, as numbered migrations applied in order when a store opens.

A migration is never edited once released: a change to the schema is a new migration appended
to :data:`MIGRATIONS`. ``{id}`` and ``{bytes}`` are filled in by the backend's dialect (an
auto-assigned key never reused, and a byte-string type); everything else is SQL that SQLite
and PostgreSQL both accept. Times are integer seconds since the Unix epoch (UTC), like the
protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_INITIAL: Final = (
    # The installation: one row, written by `init`. The fingerprint is what tokens embed.
    """CREATE TABLE site (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        created_at BIGINT NOT NULL,
        key_type TEXT NOT NULL,
        key_fingerprint {bytes} NOT NULL
    )""",
    """CREATE TABLE users (
        id {id},
        email TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    )""",
    # Smart accounts and partner holding accounts share one namespace of names, so a command
    # such as `order list NAME` is never ambiguous.
    """CREATE TABLE accounts (
        id {id},
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('smart', 'holding')),
        created_at BIGINT NOT NULL
    )""",
    # Deleted VAs are kept (deleted_at) so audit entries, orders and license history that name
    # them stay meaningful; names are unique among the live ones.
    """CREATE TABLE virtual_accounts (
        id {id},
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        name TEXT NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
        report_interval BIGINT NOT NULL DEFAULT 86400 CHECK (report_interval > 0),
        auth_validity BIGINT NOT NULL DEFAULT 7776000 CHECK (auth_validity > 0),
        created_at BIGINT NOT NULL,
        deleted_at BIGINT
    )""",
    """CREATE UNIQUE INDEX virtual_accounts_live_name
        ON virtual_accounts (account_id, name) WHERE deleted_at IS NULL""",
    """CREATE UNIQUE INDEX virtual_accounts_one_default
        ON virtual_accounts (account_id) WHERE is_default = 1""",
    """CREATE TABLE grants (
        id {id},
        user_id BIGINT NOT NULL REFERENCES users (id),
        role TEXT NOT NULL,
        account_id BIGINT REFERENCES accounts (id),
        va_id BIGINT REFERENCES virtual_accounts (id),
        granted_at BIGINT NOT NULL,
        granted_by TEXT NOT NULL
    )""",
    """CREATE UNIQUE INDEX grants_once
        ON grants (user_id, role, COALESCE(account_id, 0), COALESCE(va_id, 0))""",
    """CREATE INDEX grants_account ON grants (account_id)""",
    # An order sits in one account at a time: where it was deposited (origin) and, after a
    # delivery from a holding account, the smart account and VA it was transferred to.
    """CREATE TABLE orders (
        id {id},
        number TEXT NOT NULL UNIQUE,
        ordered_on BIGINT NOT NULL,
        deposited_at BIGINT NOT NULL,
        origin_account_id BIGINT NOT NULL REFERENCES accounts (id),
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        va_id BIGINT REFERENCES virtual_accounts (id),
        delivered_at BIGINT
    )""",
    """CREATE INDEX orders_account ON orders (account_id)""",
    """CREATE INDEX orders_origin ON orders (origin_account_id)""",
    """CREATE TABLE order_lines (
        id {id},
        order_id BIGINT NOT NULL REFERENCES orders (id),
        line_no INTEGER NOT NULL,
        tag TEXT NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0),
        starts_at BIGINT,
        ends_at BIGINT,
        CHECK ((starts_at IS NULL) = (ends_at IS NULL)),
        CHECK (starts_at < ends_at),
        UNIQUE (order_id, line_no)
    )""",
    """CREATE TABLE license_transfers (
        id {id},
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        tag TEXT NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity > 0),
        from_va_id BIGINT NOT NULL REFERENCES virtual_accounts (id),
        to_va_id BIGINT NOT NULL REFERENCES virtual_accounts (id),
        at BIGINT NOT NULL,
        actor TEXT NOT NULL
    )""",
    # A lot: some licenses of one order line sitting in one pool. Deposits and deliveries make
    # lots; a transfer drains source lots and makes new ones that point back at them (source_id,
    # transfer_id), which is what provenance follows. va_id is NULL exactly in holding accounts,
    # so nothing there can ever be part of a VA's pool.
    """CREATE TABLE licenses (
        id {id},
        order_line_id BIGINT NOT NULL REFERENCES order_lines (id),
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        va_id BIGINT REFERENCES virtual_accounts (id),
        tag TEXT NOT NULL,
        quantity BIGINT NOT NULL CHECK (quantity >= 0),
        starts_at BIGINT,
        ends_at BIGINT,
        arrived_at BIGINT NOT NULL,
        transfer_id BIGINT REFERENCES license_transfers (id),
        source_id BIGINT REFERENCES licenses (id),
        CHECK ((starts_at IS NULL) = (ends_at IS NULL)),
        CHECK (starts_at <= ends_at)
    )""",
    """CREATE INDEX licenses_pool ON licenses (va_id, tag)""",
    """CREATE INDEX licenses_account ON licenses (account_id)""",
    """CREATE INDEX licenses_order_line ON licenses (order_line_id)""",
    # Registration tokens: only the SHA-256 of the secret is kept.
    """CREATE TABLE tokens (
        id {id},
        token_id TEXT NOT NULL UNIQUE,
        secret_digest {bytes} NOT NULL,
        va_id BIGINT NOT NULL REFERENCES virtual_accounts (id),
        description TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        max_uses BIGINT NOT NULL CHECK (max_uses >= 1),
        uses BIGINT NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
        revoked_at BIGINT,
        revoked_by TEXT
    )""",
    """CREATE INDEX tokens_va ON tokens (va_id)""",
    # Devices: notice_seq only grows, across deregistration and re-registration, so a device
    # never applies an older notice after a newer one.
    """CREATE TABLE devices (
        id {id},
        device_id TEXT NOT NULL UNIQUE,
        udi TEXT NOT NULL,
        algorithm INTEGER NOT NULL,
        public_key {bytes} NOT NULL,
        va_id BIGINT NOT NULL REFERENCES virtual_accounts (id),
        state TEXT NOT NULL CHECK (state IN ('registered', 'deregistered')),
        registered_at BIGINT NOT NULL,
        deregistered_at BIGINT,
        token_id BIGINT REFERENCES tokens (id),
        last_seq BIGINT NOT NULL DEFAULT 0,
        last_report_at BIGINT,
        notice_seq BIGINT NOT NULL DEFAULT 0
    )""",
    """CREATE INDEX devices_va ON devices (va_id, state)""",
    # A registered device's latest count per tag (rows with a count of 0 are not kept).
    """CREATE TABLE device_usage (
        device_id BIGINT NOT NULL REFERENCES devices (id),
        tag TEXT NOT NULL,
        count BIGINT NOT NULL CHECK (count > 0),
        PRIMARY KEY (device_id, tag)
    )""",
    """CREATE INDEX device_usage_tag ON device_usage (tag, device_id)""",
    # Incremental counters: in_use is the sum of device_usage over the VA's registered devices,
    # kept in the same transaction as every change to it, so compliance never scans devices.
    # status is the compliance status last recorded (and audited) for the pool.
    """CREATE TABLE pool_usage (
        va_id BIGINT NOT NULL REFERENCES virtual_accounts (id),
        tag TEXT NOT NULL,
        in_use BIGINT NOT NULL CHECK (in_use >= 0),
        status INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (va_id, tag)
    )""",
    # What the service answered to each accepted report, to answer a duplicate identically.
    """CREATE TABLE accepted_reports (
        device_id BIGINT NOT NULL REFERENCES devices (id),
        seq BIGINT NOT NULL,
        digest {bytes} NOT NULL,
        answer {bytes} NOT NULL,
        accepted_at BIGINT NOT NULL,
        PRIMARY KEY (device_id, seq)
    )""",
    """CREATE INDEX accepted_reports_at ON accepted_reports (accepted_at)""",
    """CREATE TABLE dead_letters (
        id {id},
        received_at BIGINT NOT NULL,
        topic TEXT NOT NULL,
        payload {bytes} NOT NULL,
        reason TEXT NOT NULL,
        code INTEGER,
        device_id TEXT
    )""",
    # The change feed: administrative changes that can move compliance, for the running service
    # (another process) to poll with `WHERE id > last_seen`.
    """CREATE TABLE changes (
        id {id},
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        account_id BIGINT,
        va_ids TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    # The audit log: append-only, each row's hash covers the previous hash and its content.
    # No foreign keys: the log must outlive and never block what it describes.
    """CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        account_id BIGINT,
        counterpart_id BIGINT,
        subject TEXT NOT NULL,
        before_state TEXT,
        after_state TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """CREATE INDEX audit_log_account ON audit_log (account_id, seq)""",
    """CREATE INDEX audit_log_counterpart ON audit_log (counterpart_id, seq)""",
    # The chain's head, so deleting the newest entries is detected too.
    """CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{genesis}')""".replace(
        "{genesis}", "0" * 64
    ),
)

_SERVICE_STATE: Final = (
    # Notices the service pushed (no report behind them), kept until the broker acknowledged
    # them: written in the transaction that decided them, so a crash cannot lose one.
    """CREATE TABLE notice_outbox (
        id {id},
        device_id TEXT NOT NULL,
        payload {bytes} NOT NULL,
        created_at BIGINT NOT NULL
    )""",
    # Positions the service keeps across restarts: the last change-feed id handled, the time
    # up to which license terms were applied.
    """CREATE TABLE service_state (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )""",
)

_CARRIED_REQUESTS: Final = (
    # (De)registration requests carried out, kept while a copy could still pass the clock-skew
    # window: one arriving again after the device's state moved on is a replay, not a retry.
    """CREATE TABLE carried_requests (
        device_id BIGINT NOT NULL REFERENCES devices (id),
        request_id {bytes} NOT NULL,
        carried_at BIGINT NOT NULL,
        PRIMARY KEY (device_id, request_id)
    )""",
    """CREATE INDEX carried_requests_at ON carried_requests (carried_at)""",
)

_TOLD_STATUS: Final = (
    # The compliance status of the last compliance notice numbered for each device: what it
    # believes once it has them all. A pool's flip pushes to a device whose status is then
    # not this one; NULL (never told, or told before this column) always gets the push.
    """ALTER TABLE devices ADD COLUMN told_status INTEGER""",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "initial schema", _INITIAL),
    Migration(2, "service outbox and marks", _SERVICE_STATE),
    Migration(3, "requests carried out", _CARRIED_REQUESTS),
    Migration(4, "the status each device was last told", _TOLD_STATUS),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version
