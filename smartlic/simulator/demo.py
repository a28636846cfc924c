"""``smartlic-sim demo``: the whole system on one machine, in about a minute.

A broker (Mosquitto when installed, else the embedded amqtt of ``smartlic[demo]``), a fresh
SQLite collector database and key in a temporary folder, ``smartlic-collector run``, and a fleet
of ~200 virtual devices playing the ``growth`` story in accelerated time: they register and
report; ACME/Engineering grows out of compliance; the partner PartnerCo delivers an order from
its holding account; everyone is authorized again; then a 12-hour trial ends (12 real seconds)
and licenses are moved in from another VA. Each step prints the collector's compliance view;
the run's report comes last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.simulator.runner import RunOptions, execute
from smartlic.simulator.scenarios import load_scenarios

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

    from smartlic.simulator.report import RunReport

DEMO_ACCOUNT = "ACME"
DEMO_PARTNER = "PartnerCo"


def demo_options(
    *,
    devices: int,
    broker: str | None,
    broker_kind: str,
    stream: TextIO,
    workdir: Path | None = None,
    time_scale: float | None = None,
    progress: bool = True,
) -> RunOptions:
    scenario = load_scenarios()["growth"]
    values: dict[str, object] = {"devices": devices}
    if time_scale is not None:
        values["time_scale"] = time_scale
    return RunOptions(
        scenario=scenario.with_values(values),
        broker=broker,
        broker_kind=broker_kind,
        start_collector=True,
        account=DEMO_ACCOUNT,
        holding=DEMO_PARTNER,
        workdir=workdir,
        verbose=True,
        progress=progress,
        stream=stream,
    )


async def demo(options: RunOptions) -> RunReport:
    stream = options.stream
    params = options.scenario.parameters
    stream.write(
        f"smartlic demo: {params.devices} virtual devices play the growth story at"
        f" x{params.time_scale:g} virtual time (an hour per real second at 3600)\n"
    )
    return await execute(options)
