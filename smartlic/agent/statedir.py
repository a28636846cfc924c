"""The state directory: the device key, the state file, and a lock.

::

    state_dir/            0700
      key.pem             0600  the device's private key (PKCS#8), made by the first register/run
      state.cbor          0600  the snapshot (see snapshot.py), replaced atomically
      state.cbor.prev     0600  the snapshot before it: the fallback if state.cbor is damaged
      lock                      held (flock) by the process using the directory; holds its pid

One process uses a directory at a time: the daemon, or ``register``/``deregister``. Two would
overwrite each other's state and, sharing the MQTT client id, disconnect each other.
``status`` only reads, and needs no lock: the state file is always replaced whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import TYPE_CHECKING, Final

from smartlic.agent.core import AgentCore, CoreSettings
from smartlic.agent.errors import ConfigError, LocalAgentError, StateFileError
from smartlic.agent.storage import FileStorage, write_private
from smartlic.protocol import KeyType, ProtocolError, SigningKey, format_fingerprint

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from smartlic.agent.retry import Entropy
    from smartlic.protocol import Udi

KEY_FILE: Final = "key.pem"
LOCK_FILE: Final = "lock"
_SEED_BYTES: Final = {KeyType.ED25519: 32, KeyType.P256: 48}


def prepare(folder: Path) -> Path:
    """Create the state directory (0700) if needed."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateFileError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return folder


def load_key(folder: Path) -> SigningKey | None:
    path = folder / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return SigningKey.from_pem(data)
    except ProtocolError as exc:
        raise StateFileError(
            f"{path} is damaged ({exc.message}). The device's identity is in that file: restore "
            "it from a backup, or move the whole state directory aside and register anew"
        ) from None


def load_or_create_key(
    folder: Path, key_type: KeyType, entropy: Entropy
) -> tuple[SigningKey, bool]:
    """The device key, generated (0600, atomically) on a first start; and whether it was.

    A missing key beside a state file is an error: only a directory with no state gets a key.
    """
    key = load_key(folder)
    if key is not None:
        return _of_type(key, folder, key_type), False
    storage = FileStorage(folder)
    if storage.path.exists() or storage.previous.exists():
        raise _lost_key(folder)
    key = SigningKey.from_seed(key_type, entropy(_SEED_BYTES[key_type]))
    try:
        write_private(folder / KEY_FILE, key.to_pem())
    except OSError as exc:
        raise StateFileError(f"cannot write {folder / KEY_FILE}: {exc.strerror or exc}") from None
    return key, True


def _of_type(key: SigningKey, folder: Path, key_type: KeyType) -> SigningKey:
    if key.key_type is not key_type:
        raise ConfigError(
            f"{folder / KEY_FILE} holds a {key.key_type.value} key, but key_type asks for "
            f"{key_type.value}; a device keeps its key (move the state directory aside to "
            "start over)"
        )
    return key


def _lost_key(folder: Path) -> StateFileError:
    # That state belongs to the lost key. A new key would only be refused by the state check,
    # under a fingerprint nobody has seen, after a log line saying it was made.
    return StateFileError(
        f"{folder / KEY_FILE} is missing, but {folder} holds the state of the device whose "
        "key it was: restore the key file from a backup, or move the whole state directory "
        "aside and register anew"
    )


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the directory's lock, or fail naming the process that holds it."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateFileError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise StateFileError(
                f"another smartlic-agent (pid {holder}) is using {folder}: "
                "stop it first (register and deregister cannot run beside the daemon)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def open_core(
    folder: Path,
    *,
    udi: Udi | None,
    key_type: KeyType,
    entropy: Entropy,
    settings: CoreSettings | None = None,
    create: bool = True,
) -> tuple[AgentCore, FileStorage, bool]:
    """The core as the state directory left it, its storage, and whether its key is new.

    A directory without a state gets a new core (and a new key) only with ``create``;
    without it that is a :class:`LocalAgentError`. Everything that can refuse the command
    (the state, the UDI, the key) is checked before the key is made: a command refused for
    its input leaves the directory as it was, and the type of a key made for a command that
    then failed would bind every later attempt.
    """
    storage = FileStorage(folder)
    snapshot = storage.load()
    if snapshot is None:
        if not create:
            raise LocalAgentError(f"no agent state in {folder}: this device is not registered")
        if udi is None:
            raise ConfigError("no UDI: give --udi PRODUCT_ID:SERIAL (or udi = ... in the config)")
        key, created = load_or_create_key(folder, key_type, entropy)
        core = AgentCore.new(udi, key=key, entropy=entropy, settings=settings)
        return core, storage, created
    if udi is not None and str(udi) != snapshot.udi:
        raise ConfigError(
            f"{folder} belongs to {snapshot.udi}, not {udi}: use another state directory"
        )
    stored = load_key(folder)
    if stored is None:
        raise _lost_key(folder)
    key = _of_type(stored, folder, key_type)
    if snapshot.key_fingerprint != key.public.fingerprint:
        raise StateFileError(
            f"{folder / KEY_FILE} is not the key this state was made with "
            f"({format_fingerprint(key.public.fingerprint)}): restore the original key file"
        )
    core = AgentCore.restore(snapshot, key=key, entropy=entropy, settings=settings)
    return core, storage, False
