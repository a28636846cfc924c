"""The collector's key file: private to its owner, written atomically, never overwritten."""

from __future__ import annotations

import re
import stat
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.signing_key import (
    SEED_BYTES,
    KeyFileError,
    check_site_key,
    default_key_path,
    generate_key,
    read_key_file,
    write_key_file,
)
from smartlic.protocol import KeyType

if TYPE_CHECKING:
    from pathlib import Path


def test_the_key_sits_next_to_the_database_by_default(tmp_path: Path) -> None:
    assert tmp_path / "collector.db.key" == default_key_path(tmp_path / "collector.db")


@pytest.mark.parametrize("key_type", list(KeyType))
def test_a_written_key_reads_back_the_same(tmp_path: Path, key_type: KeyType) -> None:
    key = generate_key(key_type, bytes(range(1, SEED_BYTES[key_type] + 1)))
    write_key_file(tmp_path / "k", key)
    assert key.public.fingerprint == read_key_file(tmp_path / "k").public.fingerprint


def test_the_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    write_key_file(tmp_path / "k", generate_key(KeyType.ED25519, bytes(32)))
    assert 0o600 == stat.S_IMODE((tmp_path / "k").stat().st_mode)


def test_writing_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    write_key_file(tmp_path / "k", generate_key(KeyType.ED25519, bytes(32)))
    assert ["k"] == [p.name for p in tmp_path.iterdir()]


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("precious")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(tmp_path / "k", generate_key(KeyType.ED25519, bytes(32)))
    assert "precious" == (tmp_path / "k").read_text()


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    write_key_file(tmp_path / "k", generate_key(KeyType.ED25519, bytes(32)))
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(tmp_path / "k")


def test_a_missing_key_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=re.escape(f"no collector key at {tmp_path / 'k'}")):
        read_key_file(tmp_path / "k")


def test_a_key_that_is_not_the_sites_is_refused(tmp_path: Path) -> None:
    key = generate_key(KeyType.ED25519, bytes(32))
    with pytest.raises(KeyFileError, match="not the key this collector was initialised with"):
        check_site_key(tmp_path / "k", key, bytes(32))
