"""Durable state: atomic 0600 files, intact or refused, a damaged file never silently reset."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import stat
from typing import TYPE_CHECKING

import cbor2
import pytest
from agent_support import T0, UDI, Harness, device_key, entropy, new_core, restore
from hypothesis import example, given
from hypothesis import strategies as st
from smartlic.agent.core import AgentCore
from smartlic.agent.errors import AgentError, ConfigError, LocalAgentError, StateFileError
from smartlic.agent.snapshot import (
    MAGIC,
    PendingRequest,
    RequestKind,
    Snapshot,
    StoredReport,
    StoredTag,
    decode_snapshot,
    encode_snapshot,
)
from smartlic.agent.statedir import (
    KEY_FILE,
    load_or_create_key,
    locked,
    open_core,
)
from smartlic.agent.states import LicenseState
from smartlic.agent.storage import FileStorage, MemoryStorage, write_private
from smartlic.agent.timekeeping import Deadline
from smartlic.protocol import KeyType, Udi

if TYPE_CHECKING:
    from pathlib import Path


def registered_snapshot() -> Snapshot:
    harness = Harness(new_core())
    harness.script.entitled = {"network-advantage": 10}
    harness.start()
    harness.usage({"network-advantage": 2}, T0)
    harness.register(T0 + 1)
    harness.script.answer_reports = False
    harness.usage({"network-advantage": 3}, T0 + 100)
    harness.tick(T0 + 106)
    return harness.core.snapshot()


def test_a_snapshot_survives_encoding() -> None:
    snapshot = registered_snapshot()
    assert snapshot == decode_snapshot(encode_snapshot(snapshot))


@given(
    st.builds(
        Snapshot,
        udi=st.just(str(UDI)),
        key_fingerprint=st.binary(min_size=32, max_size=32),
        state=st.sampled_from(LicenseState),
        clean=st.booleans(),
        use_elapsed=st.floats(min_value=0, max_value=1e10),
        next_seq=st.integers(min_value=1, max_value=2**63 - 1),
        last_nonce=st.none() | st.binary(min_size=8, max_size=32),
        pending=st.none()
        | st.builds(
            PendingRequest,
            kind=st.sampled_from(RequestKind),
            request_id=st.binary(min_size=16, max_size=16),
            payload=st.binary(max_size=64),
            fingerprint=st.none() | st.binary(min_size=32, max_size=32),
            copies=st.integers(0, 2**31),
            older_copies=st.integers(0, 2**31),
        ),
        authorization=st.none()
        | st.builds(Deadline, wall=st.floats(0, 2e9), elapsed=st.floats(0, 2e9)),
        usage=st.dictionaries(st.sampled_from(["a", "b-c", "d.e"]), st.integers(0, 2**32 - 1)),
        tags=st.dictionaries(
            st.sampled_from(["a", "b"]),
            st.builds(StoredTag, in_use=st.integers(0, 99), entitled=st.integers(0, 99)),
        ),
        outbox=st.lists(
            st.builds(
                StoredReport,
                seq=st.integers(1, 10**6),
                created_at=st.floats(0, 2e9),
                payload=st.binary(max_size=40),
            ),
            max_size=4,
        ).map(tuple),
    )
)
def test_any_snapshot_survives_encoding(snapshot: Snapshot) -> None:
    assert snapshot == decode_snapshot(encode_snapshot(snapshot))


@pytest.mark.parametrize("cut", [0, 5, 39, 40, 100, -1])
def test_a_truncated_state_is_refused(cut: int) -> None:
    data = encode_snapshot(registered_snapshot())
    with pytest.raises(StateFileError, match=r"truncated|checksum|magic"):
        decode_snapshot(data[:cut])


def test_a_flipped_bit_is_detected() -> None:
    data = bytearray(encode_snapshot(registered_snapshot()))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(StateFileError, match="checksum"):
        decode_snapshot(bytes(data))


def test_another_file_is_refused_as_not_a_state_file() -> None:
    with pytest.raises(StateFileError, match="not a smartlic agent state file"):
        decode_snapshot(b"[usage]\nnetwork-advantage = 3\n" * 3)


def test_the_state_file_is_private(tmp_path: Path) -> None:
    FileStorage(tmp_path).save(registered_snapshot())
    assert 0o600 == stat.S_IMODE((tmp_path / "state.cbor").stat().st_mode)


def test_saving_leaves_no_temporary_file(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.save(registered_snapshot())
    assert ["state.cbor", "state.cbor.prev"] == sorted(p.name for p in tmp_path.iterdir())


def test_nothing_saved_yet_loads_as_none(tmp_path: Path) -> None:
    assert FileStorage(tmp_path).load() is None


def test_a_damaged_state_file_falls_back_to_the_previous_copy_marked_unclean(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    first = registered_snapshot()
    storage.save(first)
    storage.save(first)
    path = tmp_path / "state.cbor"
    path.write_bytes(path.read_bytes()[:50])
    loaded = storage.load()
    assert loaded is not None
    assert (first.outbox, False) == (loaded.outbox, loaded.clean)
    assert storage.warning is not None
    assert "recovered from the previous copy" in storage.warning


def test_a_missing_state_file_with_a_previous_copy_recovers_it(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.save(registered_snapshot())
    (tmp_path / "state.cbor").unlink()
    assert storage.load() is not None


def test_both_copies_damaged_is_a_clear_error(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.save(registered_snapshot())
    for name in ("state.cbor", "state.cbor.prev"):
        (tmp_path / name).write_bytes(b"SLAGENT\x01 garbage")
    with pytest.raises(StateFileError, match="Move both aside"):
        storage.load()


def test_a_damaged_only_copy_is_a_clear_error_not_a_fresh_start(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    (tmp_path / "state.cbor").write_bytes(b"")
    with pytest.raises(StateFileError, match="no previous copy"):
        storage.load()


def test_a_recovered_copy_makes_the_core_jump_its_sequence_numbers(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.save(registered_snapshot())
    (tmp_path / "state.cbor").write_bytes(b"")
    snapshot = storage.load()
    assert snapshot is not None
    core = AgentCore.restore(snapshot, key=device_key(), entropy=entropy())
    assert core.recovered_unclean


def _damage_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _recovered(tmp_path: Path, first: Snapshot, second: Snapshot) -> tuple[FileStorage, Snapshot]:
    """A storage that saved ``first`` then ``second``, whose current file was then damaged,
    and what it loaded back (``first``, from the previous copy)."""
    storage = FileStorage(tmp_path)
    storage.save(first)
    storage.save(second)
    _damage_last_byte(tmp_path / "state.cbor")
    recovered = storage.load()
    assert recovered is not None
    return storage, recovered


def test_the_first_save_after_a_recovery_keeps_the_good_previous_copy(tmp_path: Path) -> None:
    first = registered_snapshot()
    storage, recovered = _recovered(
        tmp_path, first, dataclasses.replace(first, next_seq=first.next_seq + 1)
    )

    storage.save(recovered)

    assert first == decode_snapshot((tmp_path / "state.cbor.prev").read_bytes())


def test_saves_after_the_first_since_a_recovery_keep_the_previous_copy_again(
    tmp_path: Path,
) -> None:
    first = registered_snapshot()
    storage, recovered = _recovered(tmp_path, first, first)
    storage.save(recovered)

    storage.save(dataclasses.replace(recovered, next_seq=recovered.next_seq + 1))

    assert recovered == decode_snapshot((tmp_path / "state.cbor.prev").read_bytes())


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_failed_private_write_leaves_no_temporary_file_and_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "state.cbor"
    path.write_bytes(b"old")

    def disk_full(*_: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_private(path, b"new state")
    monkeypatch.undo()

    assert (["state.cbor"], b"old") == (
        sorted(p.name for p in tmp_path.iterdir()),
        path.read_bytes(),
    )


def test_memory_storage_can_exercise_the_file_format() -> None:
    storage = MemoryStorage(encode=True)
    snapshot = registered_snapshot()
    storage.save(snapshot)
    assert snapshot == storage.load()


def test_the_device_key_is_generated_once_and_private(tmp_path: Path) -> None:
    key, created = load_or_create_key(tmp_path, KeyType.ED25519, os.urandom)
    again, created_again = load_or_create_key(tmp_path, KeyType.ED25519, os.urandom)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert (True, False, key.public.fingerprint, 0o600) == (
        created,
        created_again,
        again.public.fingerprint,
        mode,
    )


def test_a_p256_key_can_be_chosen(tmp_path: Path) -> None:
    key, _ = load_or_create_key(tmp_path, KeyType.P256, os.urandom)
    assert KeyType.P256 is key.key_type


def test_a_key_of_the_other_type_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, KeyType.ED25519, os.urandom)
    with pytest.raises(ConfigError, match="holds a Ed25519 key"):
        load_or_create_key(tmp_path, KeyType.P256, os.urandom)


def test_a_damaged_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(StateFileError, match="is damaged"):
        load_or_create_key(tmp_path, KeyType.ED25519, os.urandom)


@pytest.mark.parametrize("state_file", ["state.cbor", "state.cbor.prev"])
def test_a_lost_key_beside_a_state_is_an_error_and_no_new_key_is_made(
    tmp_path: Path, state_file: str
) -> None:
    """The state belongs to the lost key: a new one could never speak for that device."""
    (tmp_path / state_file).write_bytes(encode_snapshot(registered_snapshot()))

    with pytest.raises(StateFileError, match=r"key\.pem is missing"):
        load_or_create_key(tmp_path, KeyType.ED25519, os.urandom)
    assert not (tmp_path / KEY_FILE).exists()


def test_a_state_directory_of_another_device_is_refused(tmp_path: Path) -> None:
    core, storage, _ = open_core(tmp_path, udi=UDI, key_type=KeyType.ED25519, entropy=os.urandom)
    storage.save(core.snapshot())
    other = Udi.parse("C9300-24T:FOC999")
    with pytest.raises(ConfigError, match="belongs to ISR4331/K9:FOC1234X"):
        open_core(tmp_path, udi=other, key_type=KeyType.ED25519, entropy=os.urandom)


def test_a_first_start_without_a_udi_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no UDI"):
        open_core(tmp_path, udi=None, key_type=KeyType.ED25519, entropy=os.urandom)


def test_a_first_start_without_a_udi_makes_no_key(tmp_path: Path) -> None:
    """A key made for a refused start would fix the key type of every later attempt."""
    with pytest.raises(ConfigError):
        open_core(tmp_path, udi=None, key_type=KeyType.ED25519, entropy=os.urandom)
    assert not (tmp_path / KEY_FILE).exists()


def test_opening_without_create_an_empty_directory_is_refused_without_a_key(
    tmp_path: Path,
) -> None:
    """``deregister`` has nothing to act on: no new device, and no key, is made for it."""
    with pytest.raises(LocalAgentError, match="no agent state"):
        open_core(tmp_path, udi=UDI, key_type=KeyType.ED25519, entropy=os.urandom, create=False)
    assert not (tmp_path / KEY_FILE).exists()


def test_the_key_is_made_with_the_first_state(tmp_path: Path) -> None:
    core, _, created = open_core(tmp_path, udi=UDI, key_type=KeyType.P256, entropy=os.urandom)
    key, _ = load_or_create_key(tmp_path, KeyType.P256, os.urandom)
    assert (True, key.public.fingerprint) == (created, core.snapshot().key_fingerprint)


def test_an_unreadable_current_file_is_not_taken_for_damage(tmp_path: Path) -> None:
    """No fall-back to the previous copy (and its jump): the error names the file."""
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.save(registered_snapshot())
    storage.path.unlink()
    storage.path.mkdir()  # EISDIR on reading, as root too (EACCES would not be, as root)
    with pytest.raises(StateFileError, match=r"^cannot read .*state\.cbor: Is a directory\. Fix"):
        storage.load()


def test_an_unreadable_state_directory_is_not_taken_for_damage(tmp_path: Path) -> None:
    """Neither file is called damaged, nor is the operator told to move them aside."""
    folder = tmp_path / "state"
    folder.write_bytes(b"")  # a file where the directory should be: ENOTDIR, as root too
    with pytest.raises(StateFileError) as exc:
        FileStorage(folder).load()
    assert (
        f"cannot read {folder / 'state.cbor'}: Not a directory. Fix the owner or permissions "
        "of the file and its directory so this user can read them; nothing was changed"
    ) == str(exc.value)


def test_a_damaged_current_file_beside_an_unreadable_previous_copy_names_both(
    tmp_path: Path,
) -> None:
    """The previous copy may well be good: it is not called damaged, nor used in part."""
    storage = FileStorage(tmp_path)
    storage.save(registered_snapshot())
    storage.path.write_bytes(b"\x00" * 10)
    storage.previous.mkdir()
    with pytest.raises(StateFileError, match=r"magic\); cannot read .*\.prev: Is a directory"):
        storage.load()


def test_only_one_process_holds_the_state_directory(tmp_path: Path) -> None:
    with (
        locked(tmp_path),
        pytest.raises(StateFileError, match=f"pid {os.getpid()}"),
        locked(tmp_path),
    ):
        pass


def test_without_hard_links_the_previous_copy_is_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT has no hard links: the previous snapshot is copied instead."""

    def no_link(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    storage = FileStorage(tmp_path)
    first = registered_snapshot()
    storage.save(first)
    storage.save(first)
    assert first == decode_snapshot((tmp_path / "state.cbor.prev").read_bytes())


SHA256_BYTES = hashlib.sha256().digest_size


def _intact(body: dict[str, object]) -> bytes:
    """A file whose magic and checksum are right, whatever its fields say."""
    encoded = cbor2.dumps(body)
    return MAGIC + hashlib.sha256(encoded).digest() + encoded


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**1024, -(2**64) - 1])
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)


REGISTERED_BODY = cbor2.loads(encode_snapshot(registered_snapshot())[len(MAGIC) + SHA256_BYTES :])
field_changes = st.dictionaries(
    st.sampled_from(sorted(REGISTERED_BODY)), cbor_values, min_size=1, max_size=3
)


@given(changes=field_changes)
@example(changes={"authorization": [2**1024, 0]})
@example(changes={"use_elapsed": float("nan")})
def test_an_intact_file_with_any_field_values_loads_or_is_refused_as_a_state_file_error(
    changes: dict[str, object],
) -> None:
    """A file that passes the checksum but was written wrongly (another version, a bug) is
    refused with the field it trips on, so that the previous copy can be tried; no other
    exception leaves the decoder."""
    with contextlib.suppress(StateFileError):
        decode_snapshot(_intact({**REGISTERED_BODY, **changes}))


@given(changes=field_changes)
@example(changes={"use_elapsed": 2.0**65})
@example(changes={"last_nonce": b""})
@example(changes={"reported": {"": 0}})
def test_what_an_intact_file_loads_runs_a_core_or_is_refused_with_the_agents_own_error(
    changes: dict[str, object],
) -> None:
    """Whatever loads, the core restored from it starts, counts, reports and waits without
    an exception, or refuses at once with an :class:`AgentError` that says what to do (a
    state of another key, an unusable collector key). A use time of 2**65 s once made the
    core and the collector answer each other for ever: a float's step there is 8192 s."""
    try:
        core = restore(decode_snapshot(_intact({**REGISTERED_BODY, **changes})))
    except AgentError:
        return
    harness = Harness(core)
    harness.start(T0 + 10)
    harness.usage({"network-advantage": 4}, T0 + 20)
    harness.tick(T0 + 5_000)
    harness.tick(T0 + 100_000)
