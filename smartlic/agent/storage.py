"""Where a core's snapshots go: a small interface, a durable file, and memory.

:class:`FileStorage` is the daemon's: an atomic replace (temporary file, ``fsync``, ``rename``,
``fsync`` of the directory — POSIX ``rename(2)`` is atomic, and the directory sync makes the
rename itself durable), mode 0600, and the previous good copy kept beside it as ``.prev``. On
load, a damaged current file falls back to the previous copy with a warning the caller logs;
both damaged is a :class:`StateFileError` that says what to do. A file that cannot be read at
all (its owner or mode) is not damage: that is a :class:`StateFileError` of its own, with no
fall-back. Nothing is ever silently reset.

:class:`MemoryStorage` is the simulator's (thousands of cores, no files): it keeps the snapshot
object itself, or its encoded bytes when asked to exercise the file format.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from smartlic.agent.errors import StateFileError
from smartlic.agent.snapshot import decode_snapshot, encode_snapshot

if TYPE_CHECKING:
    from smartlic.agent.snapshot import Snapshot

STATE_FILE: Final = "state.cbor"
_NO_HARD_LINKS: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})
PRIVATE_MODE: Final = 0o600


class Storage(Protocol):
    def load(self) -> Snapshot | None:
        """The last saved snapshot, ``None`` if nothing was ever saved."""

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` durably before returning."""


class MemoryStorage:
    __slots__ = ("_data", "_snapshot", "encode", "saves")

    def __init__(self, *, encode: bool = False) -> None:
        self.encode = encode
        self.saves = 0
        self._snapshot: Snapshot | None = None
        self._data: bytes | None = None

    def load(self) -> Snapshot | None:
        if self._data is not None:
            return decode_snapshot(self._data, where="stored state")
        return self._snapshot

    def save(self, snapshot: Snapshot) -> None:
        self.saves += 1
        if self.encode:
            self._data = encode_snapshot(snapshot)
        else:
            self._snapshot = snapshot


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, PRIVATE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        # A half-written temporary file (a full disk) would stay beside the state for good,
        # taking the space the next attempt needs.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_directory(path.parent)


def sync_directory(folder: Path) -> None:
    # Some file systems (and all of Windows) cannot open a directory: nothing to sync there.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FileStorage:
    """Snapshots in ``folder/state.cbor``, the previous one in ``state.cbor.prev``."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / STATE_FILE
        self.previous = self.path.with_name(STATE_FILE + ".prev")
        self.warning: str | None = None
        """Set by :meth:`load` when it had to fall back to the previous copy."""
        self._current_damaged = False
        """Set by :meth:`load` on that fall-back: until a save replaces the current file, the
        previous copy is the only good one, and must not be replaced by the damaged file."""

    def save(self, snapshot: Snapshot) -> None:
        data = encode_snapshot(snapshot)
        try:
            if not self._current_damaged and self.path.exists():
                self._keep_previous()
            write_private(self.path, data)
        except OSError as exc:
            raise StateFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._current_damaged = False

    def _keep_previous(self) -> None:
        # A hard link keeps the current file in place while the new one is written: whatever
        # moment a crash hits, state.cbor or state.cbor.prev is whole. File systems without
        # hard links (FAT on a USB stick) get a copy instead.
        with contextlib.suppress(FileNotFoundError):
            self.previous.unlink()
        try:
            os.link(self.path, self.previous)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            write_private(self.previous, self.path.read_bytes())

    @staticmethod
    def _read(path: Path) -> bytes | None:
        """The file's bytes, ``None`` if there is none.

        A file that cannot be read (permission denied, a file where the directory should be)
        is not damaged: its content may be fine, and falling back to the previous copy, or
        telling the operator to move both aside, would lose a good state over an owner or a
        mode. So that is an error of its own, raised before anything is changed.
        """
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(
                f"cannot read {path}: {exc.strerror or exc}. Fix the owner or permissions of "
                "the file and its directory so this user can read them; nothing was changed"
            ) from None

    def load(self) -> Snapshot | None:
        self.warning = None
        self._current_damaged = False
        data = self._read(self.path)
        if data is None:
            previous_data = self._read(self.previous)
            if previous_data is None:
                return None
            problem = f"{self.path} is missing"
        else:
            try:
                return decode_snapshot(data, where=str(self.path))
            except StateFileError as exc:
                problem = str(exc)
            try:
                previous_data = self._read(self.previous)
            except StateFileError as exc:
                raise StateFileError(f"{problem}; {exc}") from None
        if previous_data is None:
            raise StateFileError(
                f"{problem}, and there is no previous copy. Move it aside to start over as a "
                "new device (this forgets its registration)"
            )
        try:
            previous = decode_snapshot(previous_data, where=str(self.previous))
        except StateFileError as exc:
            raise StateFileError(
                f"{problem}; the previous copy is unusable too ({exc}). Move both aside to "
                "start over as a new device (this forgets its registration)"
            ) from None
        self.warning = (
            f"{problem}; recovered from the previous copy {self.previous.name} "
            "(report numbers jump ahead so none is reused)"
        )
        self._current_damaged = True
        # Not marked clean: the core jumps its sequence numbers ahead, as after a crash.
        return _unclean(previous)


def _unclean(snapshot: Snapshot) -> Snapshot:
    return replace(snapshot, clean=False)
