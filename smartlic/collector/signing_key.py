"""The collector's signing key file: created once at ``init``, readable by its owner only.

Every notice the collector sends is signed with this key, and every registration token embeds
its fingerprint, so a device trusts the first answer it gets. The file is PKCS#8 PEM, written
atomically (a temporary file in the same folder, fsynced, renamed over) and created with mode
0600 so it is never readable by others, not even for a moment. By default it sits next to the
database: ``<db>.key``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING, Final

from smartlic.protocol import KeyType, LocalProtocolError, SigningKey

if TYPE_CHECKING:
    from pathlib import Path

SEED_BYTES: Final = {KeyType.ED25519: 32, KeyType.P256: 48}
"""How much randomness :func:`generate_key` needs for each key type."""


class KeyFileError(Exception):
    """The key file cannot be created or used; the message names the file and what to do."""


def default_key_path(db: Path) -> Path:
    return db.with_name(db.name + ".key")


def generate_key(key_type: KeyType, entropy: bytes) -> SigningKey:
    return SigningKey.from_seed(key_type, entropy)


def write_key_file(path: Path, key: SigningKey) -> None:
    """Write ``key`` to ``path`` (which must not exist) atomically, mode 0600."""
    if path.exists():
        raise KeyFileError(f"{path} already exists; move it away or choose another --key path")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key.to_pem())
            file.flush()
            os.fsync(file.fileno())
        # link() refuses to replace an existing file, unlike rename(): two inits racing for
        # the same path cannot silently swap each other's key.
        os.link(temporary, path)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write the key file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _sync_folder(path)


def _sync_folder(path: Path) -> None:
    """Make the new directory entry durable too."""
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_key_file(path: Path) -> SigningKey:
    """Load the key; refuse a file others can read (like ssh does)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"no collector key at {path} (see --key)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    try:
        return SigningKey.from_pem(data)
    except LocalProtocolError as exc:
        raise KeyFileError(f"{path}: {exc.message}") from None


def check_site_key(path: Path, key: SigningKey, fingerprint: bytes) -> None:
    """The key file must be the one the database was initialised with: tokens already handed
    out embed that key's fingerprint, and devices would reject answers signed by another."""
    if key.public.fingerprint != fingerprint:
        raise KeyFileError(
            f"{path} is not the key this collector was initialised with; restore that key"
        )
