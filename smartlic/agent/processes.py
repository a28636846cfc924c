"""The processes the agent starts (hooks, the usage command): each in a process group of its
own, so that ending one ends whatever it started too (a script's ``sleep``, a ``curl``)."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess


def kill_group(process: subprocess.Popen[bytes]) -> int:
    """Kill ``process`` (started with ``start_new_session=True``) and every process left in
    its group; its exit status, its own when it had exited already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()  # should it have left its group
    return process.wait()
