"""The agent stays small: it imports the protocol, paho, cryptography, cbor2 and stdlib only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "smartlic" / "agent"
ALLOWED = (
    "smartlic.agent",
    "smartlic.protocol",
    "smartlic.mqtt.url",
    "paho",
    "cryptography",
    "cbor2",
)
HEAVY = ("asyncio", "structlog", "aiosqlite", "smartlic.collector", "smartlic.simulator")


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def allowed(name: str) -> bool:
    root = name.split(".", maxsplit=1)[0]
    if root in sys.stdlib_module_names and root != "asyncio":
        return True
    return any(name == a or name.startswith(a + ".") for a in ALLOWED)


@pytest.mark.parametrize("path", sorted(AGENT.glob("*.py")), ids=lambda p: p.name)
def test_agent_module_imports_only_what_a_router_needs(path: Path) -> None:
    assert [] == [name for name in imported_modules(path) if not allowed(name)]


def test_the_running_agent_loads_neither_asyncio_nor_the_collector() -> None:
    """Importing asyncio alone costs ~11 MB; the daemon runs on paho's own loop."""
    code = (
        "import sys, smartlic.agent.cli, smartlic.agent.daemon\n"
        f"print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert "[]" == done.stdout.strip()


def test_status_does_not_load_paho() -> None:
    code = "import sys, smartlic.agent.cli\nprint('paho' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert "False" == done.stdout.strip()
