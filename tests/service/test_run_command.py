"""``smartlic-collector run`` as an operator meets it: a process, its exit codes and logs."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.cli.run import GC_YOUNGEST_THRESHOLD, tune_garbage_collector

if TYPE_CHECKING:
    from pathlib import Path

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Site

pytestmark = pytest.mark.timeout(60)


def _run(*args: str, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"SMARTLIC_DB": str(db)} if db else {})}
    return subprocess.run(
        [sys.executable, "-m", "smartlic.collector", "run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def _service(site: Site, broker: MosquittoBroker) -> subprocess.Popen[str]:
    """``smartlic-collector run`` as a process, its JSON logs on a pipe."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartlic.collector",
            "run",
            "--db",
            str(site.db),
            "--broker",
            broker.url,
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_bad_broker_url_is_bad_usage_in_one_line(collector_site: Site) -> None:
    result = _run("--broker", "ftp://example.net", db=collector_site.db)

    assert 2 == result.returncode
    assert 1 == len(result.stderr.strip().splitlines())
    assert "mqtt://" in result.stderr


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        (["--share-group", "a/b"], "share_group"),
        (["--topic-prefix", ""], "topic_prefix"),
        (["--client-id", ""], "client_id"),
        (["--broker", "mqtts://127.0.0.1:1", "--tls-ca", "/nonexistent"], "tls_ca"),
    ],
)
def test_a_setting_the_broker_would_refuse_is_bad_usage_naming_it(
    collector_site: Site, flags: list[str], setting: str
) -> None:
    """Exit 2, as the docs say for bad usage, not an internal error (exit 1)."""
    result = _run(*flags, db=collector_site.db)

    assert (2, 1) == (result.returncode, len(result.stderr.strip().splitlines()))
    assert setting in result.stderr


def test_a_missing_database_is_refused_in_one_line(tmp_path: Path) -> None:
    result = _run("--broker", "mqtt://127.0.0.1:1", db=tmp_path / "none.db")

    assert 1 == result.returncode
    assert "no collector database" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_service_cleanly(
    collector_site: Site, mosquitto: MosquittoBroker
) -> None:
    """Stop intake, finish what was received, disconnect, exit 0 — with JSON logs saying so."""
    process = _service(collector_site, mosquitto)
    deadline = time.monotonic() + 20
    seen = []
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(json.loads(line)["event"])
        if seen[-1] == "collector.connected":
            break

    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=20)
    events = seen + [json.loads(line)["event"] for line in rest.splitlines()]

    assert 0 == process.returncode
    assert ["collector.stopping", "collector.stopped"] == [
        e for e in events if e in ("collector.stopping", "collector.stopped")
    ]


def test_the_service_process_collects_garbage_less_often_and_never_start_up_objects() -> None:
    """``run`` tunes CPython's collector for the service's many short-lived objects."""
    threshold = gc.get_threshold()
    try:
        tune_garbage_collector()

        assert GC_YOUNGEST_THRESHOLD == gc.get_threshold()[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_sigterm_stops_the_service_whose_log_reader_is_gone(
    collector_site: Site, mosquitto: MosquittoBroker
) -> None:
    """``run ... | head -1``: once the pipe's reader has gone, every log line fails to be
    written (EPIPE), and the service hung at SIGTERM, the stop's own log line failing."""
    process = _service(collector_site, mosquitto)
    assert process.stderr is not None
    while "collector.connected" not in process.stderr.readline():
        pass
    process.stderr.close()

    process.send_signal(signal.SIGTERM)

    assert 0 == process.wait(timeout=20)
