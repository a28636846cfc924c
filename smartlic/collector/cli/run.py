"""``smartlic-collector run``: the service, configured from a TOML file, environment and flags.

Every setting of :class:`~smartlic.collector.service.config.ServiceConfig` is a flag here
(``--batch-size``), an environment variable (``SMARTLIC_BATCH_SIZE``) and a key of the
``[collector]`` table of ``--config FILE``; flags win over the environment, which wins over the
file. ``--db`` and ``--key`` are the global options every command shares.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from smartlic.collector.cli.framework import KEY_ENV, Command, UsageError
from smartlic.collector.service.config import ConfigError, ServiceConfig, load_config

if TYPE_CHECKING:
    import argparse

    from smartlic.collector.cli.framework import Invocation

_GLOBAL = frozenset({"db", "key"})
_HELP = {
    "broker": "broker URL, mqtt://[user[:password]@]host[:port] or mqtts://",
    "mqtt_protocol": "MQTT protocol version: 5 (default) or 3.1.1",
    "share_group": "shared subscription group ('' subscribes without sharing)",
    "clock_skew": "seconds a report's time may differ from the collector's clock",
    "batch_size": "messages decided and committed per transaction",
    "batch_linger_ms": "wait this long for a batch to fill",
    "intake_limit": "messages buffered before reading from the broker pauses",
    "crypto_workers": "processes verifying and signing (0: on the event loop)",
    "change_poll_ms": "how often administrative changes are looked for",
    "time_scale": "simulations only: run the clock this many times faster",
    "time_origin": "simulations only: virtual epoch seconds at start",
}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with a [collector] table")
    for field in dataclasses.fields(ServiceConfig):
        if field.name in _GLOBAL:
            continue
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, dest=f"cfg_{field.name}", default=None, help=_HELP.get(field.name)
        )


async def _run(invocation: Invocation) -> int:
    args = invocation.args
    overrides = {
        field.name: getattr(args, f"cfg_{field.name}")
        for field in dataclasses.fields(ServiceConfig)
        if field.name not in _GLOBAL
    }
    # --db given, or SMARTLIC_DB set, beats the file; the framework's default does not.
    if args.db is not None or "SMARTLIC_DB" in os.environ:
        overrides["db"] = invocation.db
    # Likewise --key or SMARTLIC_KEY, resolved as for every command, beats the file.
    if args.key is not None or os.environ.get(KEY_ENV):
        overrides["key"] = invocation.key_path
    try:
        config = load_config(args.config, overrides=overrides)
        config.usable_broker_address()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    # Imported here: administrative commands need none of the service's MQTT machinery.
    from smartlic.collector.service.logs import configure_logging  # noqa: PLC0415
    from smartlic.collector.service.service import (  # noqa: PLC0415
        CollectorService,
        install_signal_handlers,
    )

    configure_logging(config.log_level, config.log_format, sys.stderr)
    tune_garbage_collector()
    service = CollectorService(config)
    install_signal_handlers(service)
    await service.run()
    return 0


GC_YOUNGEST_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (CPython's default: 700)."""


def tune_garbage_collector() -> None:
    """Collect less often in the service process, and never look at start-up's objects again.

    The service allocates a few hundred short-lived objects per message, almost none in
    reference cycles; with CPython's default thresholds the collector ran every few messages
    and a full collection went over every module and cached key (measured: 8-15 µs of CPU per
    report, ≈ 0.5 µs with these settings). Objects that do form cycles are still collected.
    """
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, middle, oldest)


COMMANDS = (
    Command(
        ("run",),
        "run the collector service (MQTT ingest, notices, pushes)",
        _run,
        _arguments,
        acting_user=False,
        store="none",
    ),
)
