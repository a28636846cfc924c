"""The import rules of docs/architecture.md, enforced.

* ``smartlic.protocol`` is sans-I/O: none of its modules imports a module that does I/O,
  reads a clock or draws randomness, and importing it loads no network or event-loop module.
* ``smartlic.protocol`` and ``smartlic.mqtt`` import no other smartlic package.
* ``smartlic.agent`` imports neither the collector nor the simulator; the collector imports
  neither the agent nor the simulator.

Imports are read from the source (AST), wherever they sit: top level, inside functions, under
``if TYPE_CHECKING``. Relative imports are resolved. The packages may be empty; the rules hold
as they fill up.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent / "smartlic"

IO_MODULES: Final = frozenset(
    {
        "paho",
        "asyncio",
        "aiosqlite",
        "structlog",
        "socket",
        "time",
        "random",
        "os",
        "subprocess",
        "threading",
        "logging",
        "pathlib",
        "secrets",
        "selectors",
        "shutil",
        "tempfile",
        "urllib",
        "http",
        "sqlite3",
        "multiprocessing",
        "concurrent",
    }
)
"""What smartlic.protocol may not import: sockets, files, clocks, randomness, threads, logs."""

CONSOLE_MODULES: Final = frozenset({"sys", "argparse", "io"})
CONSOLE_BUILTINS: Final = frozenset({"open", "print", "input"})
CONSOLE_ENTRY_POINT: Final = ROOT / "protocol" / "inspect.py"
"""smartlic-inspect's module. pyproject maps the console script into smartlic.protocol, so
it lives there, but it is an entry point, not part of the library: it alone may read a file
or stdin and print. Its decoding and formatting are pure functions; only ``main()`` does I/O,
and nothing in the library imports it (checked below)."""

SMARTLIC_PACKAGES: Final = ("protocol", "mqtt", "agent", "collector", "simulator")
FORBIDDEN_SMARTLIC_IMPORTS: Final = {
    "protocol": {"mqtt", "agent", "collector", "simulator"},
    "mqtt": {"protocol", "agent", "collector", "simulator"},
    "agent": {"collector", "simulator"},
    "collector": {"agent", "simulator"},
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    """The absolute dotted name imported (for ``from a import b``: both ``a`` and ``a.b``)."""
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.line} imports {self.module}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(path: Path) -> list[Import]:
    return _imports_in(path.read_text(encoding="utf-8"), path)


def _imports_in(source: str, path: Path) -> list[Import]:
    """The imports of ``source``, read as the module at ``path`` (for relative imports)."""
    tree = ast.parse(source, filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(path).split(".")
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(base, path, node.lineno))
            found.extend(Import(f"{base}.{alias.name}", path, node.lineno) for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _top(module: str) -> str:
    return module.partition(".")[0]


def _smartlic_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "smartlic" and len(parts) > 1:
        return parts[1]
    return None


def test_the_rules_cover_packages_that_exist() -> None:
    """The checked packages are real folders (a rename would silently empty the checks)."""
    assert (ROOT / "protocol" / "cose.py").is_file()
    for package in SMARTLIC_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_import_reader_sees_every_kind_of_import() -> None:
    """The AST reader finds plain, from, relative and function-level imports."""
    source = (
        "import os.path\n"
        "from socket import socket\n"
        "from . import cose\n"
        "from ..collector import store\n"
        "def f():\n"
        "    import time\n"
    )

    names = {i.module for i in _imports_in(source, ROOT / "protocol" / "example.py")}

    assert {
        "os.path",
        "socket",
        "smartlic.protocol.cose",
        "smartlic.collector.store",
        "time",
    } <= names


@pytest.mark.parametrize("path", _modules("protocol"), ids=lambda p: p.name)
def test_protocol_module_does_no_io(path: Path) -> None:
    """No protocol module imports a module that does I/O, reads a clock or draws randomness."""
    offending = [str(i) for i in _imports(path) if _top(i.module) in IO_MODULES]

    assert [] == offending


def test_the_mqtt_packet_codec_does_no_io() -> None:
    """``smartlic.mqtt.packets`` is the native client's sans-I/O core, like the protocol."""
    offending = [
        str(i) for i in _imports(ROOT / "mqtt" / "packets.py") if _top(i.module) in IO_MODULES
    ]

    assert [] == offending


@pytest.mark.parametrize(
    "path", [p for p in _modules("protocol") if p != CONSOLE_ENTRY_POINT], ids=lambda p: p.name
)
def test_protocol_library_module_has_no_console_io(path: Path) -> None:
    """Only the console entry point may touch stdin/stdout/argv or open a file."""
    imports = [str(i) for i in _imports(path) if _top(i.module) in CONSOLE_MODULES]
    calls = [
        f"{path.name}:{node.lineno} calls {node.func.id}()"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in CONSOLE_BUILTINS
    ]

    assert [] == imports + calls


@pytest.mark.parametrize(
    "package", sorted(FORBIDDEN_SMARTLIC_IMPORTS), ids=lambda p: f"smartlic.{p}"
)
def test_package_imports_only_allowed_smartlic_packages(package: str) -> None:
    """protocol and mqtt stand alone; agent and collector do not import each other (or the sim)."""
    forbidden = FORBIDDEN_SMARTLIC_IMPORTS[package]
    offending = [
        str(i)
        for path in _modules(package)
        for i in _imports(path)
        if _smartlic_package(i.module) in forbidden
    ]

    assert [] == offending


def test_nothing_in_the_library_imports_the_console_entry_point() -> None:
    """smartlic.protocol.inspect is reached only through its console script."""
    offending = [
        str(i)
        for package in SMARTLIC_PACKAGES
        for path in _modules(package)
        if path != CONSOLE_ENTRY_POINT
        for i in _imports(path)
        if i.module == "smartlic.protocol.inspect"
    ]

    assert [] == offending


def test_importing_protocol_loads_no_network_or_event_loop_module() -> None:
    """In a fresh interpreter, ``import smartlic.protocol`` pulls in none of these modules."""
    probe = (
        "import sys, smartlic.protocol\n"
        "watched = ('paho', 'asyncio', 'aiosqlite', 'structlog', 'socket', 'smartlic.mqtt',\n"
        "           'smartlic.agent', 'smartlic.collector', 'smartlic.simulator',\n"
        "           'smartlic.protocol.inspect')\n"
        "print('\\n'.join(sorted(m for m in sys.modules\n"
        "                        if any(m == w or m.startswith(w + '.') for w in watched))))\n"
    )
    # Coverage measuring subprocesses would start in the probe and import socket itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )

    assert "" == result.stdout.strip()
