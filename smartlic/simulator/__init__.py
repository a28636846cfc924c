"""smartlic-sim: fleets of virtual devices, each driven by the agent's own core, against a real
broker and collector; scenarios, live progress, and a report whose lost and double-counted
counts must be zero. See docs/simulator.md."""
