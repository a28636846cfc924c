"""Structured logs (structlog): JSON lines for machines, readable lines for terminals."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class _UnfailingLogger(structlog.PrintLogger):
    """A :class:`structlog.PrintLogger` whose writes cannot fail the service.

    Once the stream's reader is gone (``run ... | head``, a log shipper that crashed) every
    write fails with EPIPE: raised in the middle of a batch or of the stop itself, that left
    the service unable to stop at SIGTERM. A log that cannot be written is lost instead.
    """

    def msg(self, message: str) -> None:
        # OSError: EPIPE, and a full disk (ENOSPC) or a revoked terminal (EIO) the same way.
        with contextlib.suppress(OSError, ValueError):  # ValueError: the stream was closed
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _UnfailingLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *_args: object) -> _UnfailingLogger:
        return _UnfailingLogger(self._stream)


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Send structlog events to ``stream`` (stderr): JSON unless ``fmt`` or a TTY says console."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=_UnfailingLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
