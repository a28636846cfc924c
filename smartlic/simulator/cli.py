"""``smartlic-sim``: fleets of virtual devices against a real broker and collector.

::

    smartlic-sim demo [--devices 200] [--broker URL]
    smartlic-sim run --scenario NAME [--devices N] [--duration S] [--broker URL] [--db PATH]
                     [--json FILE] [--time-scale X] [--param KEY=VALUE ...]
    smartlic-sim scenarios

Exit status: 0 the run passed; 1 a check failed (a report lost or double-counted, stale
committed usage, a hostile message accepted, or the story did not see what it expected);
2 bad usage; 3 the run could not be made (no broker, the collector did not start).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smartlic.simulator.demo import demo, demo_options
from smartlic.simulator.infra import InfraError
from smartlic.simulator.runner import RunOptions, execute
from smartlic.simulator.scenarios import ScenarioError, load_scenarios, parse_assignment
from smartlic.simulator.setup import OPERATOR

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from smartlic.simulator.report import RunReport

PROG: Final = "smartlic-sim"
EXIT_USAGE: Final = 2
EXIT_INFRA: Final = 3
_SHORTCUTS: Final = ("devices", "duration", "time_scale", "rate", "protocol", "seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fleets of virtual smartlic devices against a broker and collector."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="play a scenario and report")
    run.add_argument("--scenario", required=True, help="a preset name (see 'scenarios')")
    run.add_argument("--scenarios", type=Path, help="a TOML file of more presets")
    run.add_argument("--devices", type=int)
    run.add_argument("--duration", type=float, help="real seconds of the main part")
    run.add_argument("--time-scale", type=float, help="virtual seconds per real second")
    run.add_argument("--rate", type=float, help="connections per second during the ramp-up")
    run.add_argument("--protocol", choices=("5", "3.1.1"), help="MQTT version")
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="any parameter"
    )
    _infrastructure(run)
    run.add_argument("--db", type=Path, help="the collector's database, to set up and check")
    run.add_argument(
        "--start-collector",
        action="store_true",
        help="with --broker: run a collector of our own on it (with --db or a new database)",
    )
    run.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="[VA=]TOKEN",
        help="registration token(s) to use instead of setting accounts up (no --db)",
    )
    run.add_argument("--account", help="smart account name to create (default SIM-<run id>)")
    run.add_argument("--as", dest="operator", default=OPERATOR, help="site operator email")
    run.add_argument("--verbose", action="store_true", help="show the compliance view per step")

    dem = commands.add_parser("demo", help="the growth story with ~200 devices, in a minute")
    dem.add_argument("--devices", type=int, default=200)
    dem.add_argument("--time-scale", type=float)
    _infrastructure(dem)

    listing = commands.add_parser("scenarios", help="list the scenario presets")
    listing.add_argument("--scenarios", type=Path)
    return parser


def _infrastructure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="mqtt://host:port of a broker (default: start one)")
    parser.add_argument(
        "--broker-kind",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="which broker to start when none is given (auto: Mosquitto if installed)",
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--workdir", type=Path, help="keep the run's files here")
    parser.add_argument("--no-progress", action="store_true", help="no live status line")


def _tokens(values: Sequence[str]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for value in values:
        va, sep, token = value.rpartition("=")
        if sep and va and not va.startswith("slt"):
            tokens[va] = token
        else:
            tokens.setdefault("DEFAULT", value)
    return tokens


def _run_options(args: argparse.Namespace) -> RunOptions:
    scenarios = load_scenarios(args.scenarios)
    if args.scenario not in scenarios:
        raise ScenarioError(
            f"no scenario {args.scenario!r}; there are: {', '.join(sorted(scenarios))}"
        )
    values: dict[str, object] = dict(parse_assignment(p) for p in args.param)
    values.update(
        {name: getattr(args, name) for name in _SHORTCUTS if getattr(args, name) is not None}
    )
    return RunOptions(
        scenario=scenarios[args.scenario].with_values(values),
        broker=args.broker,
        broker_kind=args.broker_kind,
        start_collector=True if args.start_collector else None,
        db=args.db,
        tokens=_tokens(args.token),
        account=args.account,
        operator=args.operator,
        workdir=args.workdir,
        verbose=args.verbose,
        progress=not args.no_progress,
    )


async def _until_signalled(work: Coroutine[Any, Any, RunReport]) -> RunReport:
    """Run ``work``; SIGTERM cancels it like Ctrl-C does, so brokers and collectors stop."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _finish(report: RunReport, json_path: Path | None) -> int:
    sys.stdout.write(report.render() + "\n")
    if json_path is not None:
        report.write_json(json_path)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scenarios":
            for name, scenario in sorted(load_scenarios(args.scenarios).items()):
                p = scenario.parameters
                sys.stdout.write(f"{name:<10} {p.devices:>6} devices  {scenario.description}\n")
            return 0
        if args.command == "demo":
            options = demo_options(
                devices=args.devices,
                broker=args.broker,
                broker_kind=args.broker_kind,
                stream=sys.stderr,
                workdir=args.workdir,
                time_scale=args.time_scale,
                progress=not args.no_progress,
            )
            return _finish(asyncio.run(_until_signalled(demo(options))), args.json)
        options = _run_options(args)
        return _finish(asyncio.run(_until_signalled(execute(options))), args.json)
    except ScenarioError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return EXIT_USAGE
    except InfraError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_INFRA
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
