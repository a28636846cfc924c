"""Reading the device's usage: a TOML file it keeps up to date, or a command it provides."""

from __future__ import annotations

import shlex
import subprocess
from typing import TYPE_CHECKING, Final

from smartlic.agent.usage import UsageError, parse_usage_lines, parse_usage_toml

if TYPE_CHECKING:
    from pathlib import Path

COMMAND_TIMEOUT: Final = 10.0


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
            done = subprocess.run(  # noqa: S603 -- the operator's configured command, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UsageError(f"{name} did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise UsageError(f"cannot run {name}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
            raise UsageError(
                f"{name} exited with status {done.returncode}"
                + (f": {detail[0][:200]}" if detail else "")
            )
        try:
            return parse_usage_lines(done.stdout.decode("utf-8"))
        except (UsageError, UnicodeDecodeError) as exc:
            raise UsageError(f"{name}: {exc}") from None
