"""Usage sources: a TOML [usage] table, or tag=count lines from a command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from smartlic.agent.sources import OUTPUT_LIMIT, UsageCommand, UsageFile
from smartlic.agent.usage import (
    UsageError,
    check_counts,
    parse_usage_lines,
    parse_usage_toml,
    same_usage,
)

if TYPE_CHECKING:
    from collections.abc import Callable

HUGE_NUMBER = "9" * 5000
"""Past CPython's 4300-digit limit on converting text to an int (a plain ``ValueError``)."""
DEEP_ARRAY = "[" * 3000 + "]" * 3000
"""Past the recursion limit of ``tomllib``'s array parser (a ``RecursionError``)."""


def test_toml_usage_table_gives_counts() -> None:
    text = '[usage]\nnetwork-advantage = 3\n"dna-essentials" = 0\n\n[device]\nname = "r1"\n'
    assert {"network-advantage": 3, "dna-essentials": 0} == parse_usage_toml(text)


def test_toml_without_usage_table_means_no_usage() -> None:
    assert {} == parse_usage_toml('[device]\nname = "r1"\n')


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[usage\n", "not valid TOML"),
        ("usage = 3\n", "must be a table"),
        ("[usage]\nnetwork-advantage = -1\n", "whole number"),
        ("[usage]\nnetwork-advantage = 1.5\n", "whole number"),
        ("[usage]\nnetwork-advantage = true\n", "whole number"),
        ('[usage]\nnetwork-advantage = "3"\n', "whole number"),
        ("[usage]\nNetwork = 3\n", "license tag"),
        ("[usage]\nbig = 4294967296\n", "whole number"),
    ],
)
def test_bad_toml_usage_is_refused_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_usage_toml(text)


@pytest.mark.parametrize("value", [HUGE_NUMBER, DEEP_ARRAY], ids=["huge-number", "deep-array"])
def test_toml_that_python_cannot_hold_is_refused_as_not_valid_toml(value: str) -> None:
    with pytest.raises(UsageError, match="not valid TOML"):
        parse_usage_toml(f"[usage]\na = {value}\n")


def test_command_lines_give_counts_skipping_blanks_and_comments() -> None:
    text = "# from the licensing daemon\nnetwork-advantage=3\n\n  throughput-1g = 2  \n"
    assert {"network-advantage": 3, "throughput-1g": 2} == parse_usage_lines(text)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("network-advantage\n", "line 1: expected tag=count"),
        ("a=1\nnetwork-advantage=x\n", "line 2: count 'x'"),
        ("a=1\na=2\n", "given twice"),
        ("A=1\n", "license tag"),
        ("a=-1\n", "not a whole number"),
        ("a=\u0661\n", "not a whole number"),
    ],
)
def test_bad_command_lines_are_refused_naming_the_line(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_usage_lines(text)


@pytest.mark.parametrize("digits", [HUGE_NUMBER, "0" * 5000 + "4294967296"])
def test_a_count_line_with_too_many_digits_is_refused_naming_the_line(digits: str) -> None:
    with pytest.raises(UsageError, match=r"line 2: a count is a whole number 0\.\.4294967295"):
        parse_usage_lines(f"a=1\nb={digits}\n")


def test_leading_zeros_do_not_make_a_count_too_long() -> None:
    assert {"a": 7} == parse_usage_lines("a=" + "0" * 5000 + "7\n")


def test_more_tags_than_a_report_carries_are_refused() -> None:
    with pytest.raises(UsageError, match="at most 64"):
        parse_usage_lines("".join(f"t{n}=1\n" for n in range(65)))


def test_check_counts_refuses_a_bool_count() -> None:
    with pytest.raises(UsageError, match="whole number"):
        check_counts({"network-advantage": True})


def test_a_tag_at_zero_is_the_same_usage_as_an_absent_tag() -> None:
    assert same_usage({"a": 1, "b": 0}, {"a": 1})


def test_different_counts_are_different_usage() -> None:
    assert not same_usage({"a": 1}, {"a": 2})


def test_usage_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "usage.toml"
    path.write_text("[usage]\na = 1\n")
    source = UsageFile(path)
    first = source.poll()
    unchanged = source.poll()
    path.write_text("[usage]\na = 22\n")
    assert ({"a": 1}, None, {"a": 22}) == (first, unchanged, source.poll())


def test_an_unchanged_bad_usage_file_stays_an_error_until_it_is_mended(tmp_path: Path) -> None:
    path = tmp_path / "usage.toml"
    path.write_text("[usage]\na = \n")
    source = UsageFile(path)
    with pytest.raises(UsageError) as first:
        source.poll()
    with pytest.raises(UsageError) as again:
        source.poll()
    path.write_text("[usage]\na = 3\n")

    assert (str(first.value), {"a": 3}) == (str(again.value), source.poll())


def test_an_unreadable_usage_file_is_read_again_once_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mending permissions (chmod) changes only the ctime, which the stamp does not see."""
    path = tmp_path / "usage.toml"
    path.write_text("[usage]\na = 3\n")
    source = UsageFile(path)
    real_read_text: Callable[..., str] = Path.read_text
    refusals = iter([PermissionError(13, "Permission denied")])

    def read_text_refused_once(self: Path, *args: object, **kwargs: object) -> str:
        refusal = next(refusals, None)
        if refusal is not None:
            raise refusal
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text_refused_once)
    with pytest.raises(UsageError, match="Permission denied"):
        source.poll()

    assert {"a": 3} == source.poll()


def test_missing_usage_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        UsageFile(tmp_path / "absent.toml").poll()


def test_usage_command_output_gives_counts() -> None:
    source = UsageCommand(f"{sys.executable} -c \"print('a=4')\"")
    assert {"a": 4} == source.poll()


def test_failing_usage_command_is_a_usage_error_with_its_status() -> None:
    source = UsageCommand(f'{sys.executable} -c "raise SystemExit(3)"')
    with pytest.raises(UsageError, match="status 3"):
        source.poll()


def test_missing_usage_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot run"):
        UsageCommand("/nonexistent/usage-tool").poll()


def test_a_usage_command_that_prints_without_end_is_refused_at_the_limit() -> None:
    """``yes`` was read whole until the timeout: 1 GB in 2 s, on the daemon's only thread."""
    started = time.monotonic()

    with pytest.raises(UsageError, match=f"printed more than {OUTPUT_LIMIT} bytes"):
        UsageCommand("yes network-advantage=1", timeout=10).poll()

    assert time.monotonic() - started < 5


def test_a_usage_command_that_leaves_a_child_behind_is_read_when_it_exits() -> None:
    """The child kept the pipe open: the command was said not to finish, and the child ran
    on. It is killed, and the command's output counts."""
    marker = f"sleep {1000 + os.getpid() % 1000}"
    source = UsageCommand(f"sh -c 'echo a=4; {marker} &'", timeout=5)

    counts = source.poll()

    # SIGKILL takes its moment to reach a process that is not our child.
    deadline = time.monotonic() + 5
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {"a": 4} == counts
    assert "" == _running(marker)


def _running(command: str) -> str:
    """The processes running ``command``, as pgrep lists them."""
    done = subprocess.run(["pgrep", "-f", command], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def test_a_usage_command_that_closes_its_output_before_it_exits_gets_its_own_status() -> None:
    """``cat`` closes its streams just before it exits: killed at the end of its output, it
    was said to exit with status -9 about one poll in two."""
    source = UsageCommand("sh -c 'echo a=4; exec >&- 2>&-; sleep 0.3'", timeout=5)

    assert {"a": 4} == source.poll()
