"""The optional hook: a command the device provides, run on every license state change.

It gets the new and the previous state as its last two arguments and in the environment
(``SMARTLIC_STATE``, ``SMARTLIC_PREVIOUS_STATE``, ``SMARTLIC_EVENT``, ``SMARTLIC_UDI``), so a
device can enforce (turn features off) or alert. Hooks run one at a time, in order, without
blocking the agent; one that overruns its timeout is killed. At shutdown the agent waits a
little for them (:meth:`HookRunner.finish`); then one still running is killed, and each change
whose hook never ran is logged.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections import deque
from typing import TYPE_CHECKING

from smartlic.agent.errors import ConfigError
from smartlic.agent.processes import kill_group

if TYPE_CHECKING:
    from smartlic.agent.actions import StateChanged

log = logging.getLogger("smartlic.agent")


class HookRunner:
    def __init__(self, command: str, *, udi: str, timeout: float) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"hook: {exc}") from None
        if not self.argv:
            raise ConfigError("hook is empty")
        self.udi = udi
        self.timeout = timeout
        self._queue: deque[StateChanged] = deque()
        self._running: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._queue)

    def state_changed(self, change: StateChanged) -> None:
        self._queue.append(change)
        self.pump()

    def pump(self) -> None:
        """Reap the running hook, kill it if overdue, start the next one."""
        running = self._running
        if running is not None:
            status = running.poll()
            if status is None and time.monotonic() - self._started > self.timeout:
                log.warning("hook %s overran %g s: killed", self.argv[0], self.timeout)
                status = kill_group(running)
            if status is None:
                return
            if status:
                log.warning("hook %s exited with status %s", self.argv[0], status)
            self._running = None
        if self._queue:
            self._start(self._queue.popleft())

    def _start(self, change: StateChanged) -> None:
        env = dict(
            os.environ,
            SMARTLIC_STATE=change.state.value,
            SMARTLIC_PREVIOUS_STATE=change.previous.value,
            SMARTLIC_EVENT=change.event.name,
            SMARTLIC_UDI=self.udi,
        )
        try:
            self._running = subprocess.Popen(  # noqa: S603 -- the operator's hook, no shell
                [*self.argv, change.state.value, change.previous.value],
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own process group, so that killing an overdue hook kills what it
                # started too (a shell script's sleep, a curl).
                start_new_session=True,
            )
        except OSError as exc:
            log.error("cannot run hook %s: %s", self.argv[0], exc.strerror or exc)  # noqa: TRY400 -- a one-line message, no traceback
            return
        self._started = time.monotonic()

    def finish(self, timeout: float) -> None:
        """At shutdown: give queued and running hooks up to ``timeout`` seconds in total.

        Then a hook still running is killed and the changes still queued are dropped, each
        with a warning: nothing is left running behind the agent, nor dropped unsaid.
        """
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.05)
        running, self._running = self._running, None
        status = None if running is None else running.poll()
        if running is not None and status is None:
            name = self.argv[0]
            log.warning("hook %s still running at shutdown after %g s: killed", name, timeout)
            kill_group(running)
        elif status:
            # It ended between the last pump and now: said as pump would have said it.
            log.warning("hook %s exited with status %s", self.argv[0], status)
        while self._queue:
            change = self._queue.popleft()
            log.warning(
                "hook %s not run at shutdown: the change to %s (from %s)",
                self.argv[0],
                change.state.value,
                change.previous.value,
            )
