"""Reading the device's usage: a TOML file it keeps up to date, or a command it provides."""

from __future__ import annotations

import os
import selectors
import shlex
import subprocess
import time
from typing import TYPE_CHECKING, Final

from smartlic.agent.processes import kill_group
from smartlic.agent.usage import UsageError, parse_usage_lines, parse_usage_toml

if TYPE_CHECKING:
    from pathlib import Path

COMMAND_TIMEOUT: Final = 10.0
OUTPUT_LIMIT: Final = 64 * 1024
"""What a usage command may print: its most tags (``MAX_TAGS`` lines of ``tag=count``) are far
less; more is a command gone wrong, not usage."""
_POLL_STEP: Final = 0.1


class UsageFile:
    """A TOML file with a ``[usage]`` table; re-read only when it changed (mtime, size, inode).

    A file whose content could not be decoded or parsed stays an error until it changes: an
    unchanged bad file must not pass for a good one that merely did not change. A file that
    could not be read is tried again on every poll: mending its permissions changes only its
    ctime, which the stamp does not see.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._problem: UsageError | None = None

    def poll(self) -> dict[str, int] | None:
        """The counts if the file changed since the last poll, else ``None``."""
        try:
            st = self.path.stat()
        except OSError as exc:
            self._stamp = None
            raise UsageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            if self._problem is not None:
                raise self._problem
            return None
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self._stamp = None
            raise UsageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            self._stamp, self._problem = stamp, UsageError(f"cannot read {self.path}: {exc}")
            raise self._problem from None
        self._stamp, self._problem = stamp, None
        try:
            return parse_usage_toml(text)
        except UsageError as exc:
            self._problem = UsageError(f"{self.path}: {exc}")
            raise self._problem from None


class UsageCommand:
    """A command printing ``tag=count`` lines; run on every poll."""

    def __init__(self, command: str, timeout: float = COMMAND_TIMEOUT) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"usage_command: {exc}") from None
        if not self.argv:
            raise UsageError("usage_command is empty")
        self.timeout = timeout

    def poll(self) -> dict[str, int]:
        name = self.argv[0]
        try:
            process = subprocess.Popen(  # noqa: S603 -- the operator's configured command, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own process group: what it leaves running is killed with it.
                start_new_session=True,
            )
        except OSError as exc:
            raise UsageError(f"cannot run {name}: {exc.strerror or exc}") from None
        try:
            out, err = _output(process, name, self.timeout)
        finally:
            status = kill_group(process)
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        if status != 0:
            detail = err.decode("utf-8", "replace").strip().splitlines()[:1]
            raise UsageError(
                f"{name} exited with status {status}" + (f": {detail[0][:200]}" if detail else "")
            )
        try:
            return parse_usage_lines(out.decode("utf-8"))
        except (UsageError, UnicodeDecodeError) as exc:
            raise UsageError(f"{name}: {exc}") from None


def _output(process: subprocess.Popen[bytes], name: str, timeout: float) -> tuple[bytes, bytes]:
    """What ``process`` prints, until it exits: at most OUTPUT_LIMIT bytes of each stream,
    within ``timeout`` seconds.

    Not ``subprocess.run``: it keeps all the output (a ``yes`` filled 1 GB in 2 s, on the
    daemon's only thread), and waits for the pipes to close, which a child left running in
    the background keeps from happening long after the command itself has exited.
    """
    deadline = time.monotonic() + timeout
    streams = {process.stdout: bytearray(), process.stderr: bytearray()}
    with selectors.DefaultSelector() as selector:
        for pipe in streams:
            if pipe is not None:
                selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            exited = process.poll() is not None
            left = deadline - time.monotonic()
            if left <= 0:
                raise UsageError(f"{name} did not finish within {timeout:g} s")
            events = selector.select(min(left, _POLL_STEP))
            if exited and not events:
                break  # it has exited: whatever keeps its pipes open is left behind, killed
            for key, _ in events:
                chunk = os.read(key.fd, 65_536)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is process.stdout:
                    _keep(streams[process.stdout], chunk, name)
                else:
                    # Only its first line is shown: keep no more than the limit of it.
                    streams[process.stderr] = (streams[process.stderr] + chunk)[:OUTPUT_LIMIT]
    # Its pipes are closed, which a command may do some time before it exits (coreutils do,
    # just before): its own exit status is wanted, not the kill's that follows.
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise UsageError(f"{name} did not finish within {timeout:g} s") from None
    return bytes(streams[process.stdout]), bytes(streams[process.stderr])


def _keep(out: bytearray, chunk: bytes, name: str) -> None:
    out += chunk
    if len(out) > OUTPUT_LIMIT:
        raise UsageError(f"{name} printed more than {OUTPUT_LIMIT} bytes")
