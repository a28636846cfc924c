"""MQTT plumbing shared by the agent, the collector and the simulator.

Imports only the standard library and paho-mqtt, never another smartlic package, so every
service may use it without bending the dependency rule (protocol <- agent <- simulator,
protocol <- collector). Submodules are imported explicitly; this file imports nothing so the
agent does not pay for asyncio when it only needs :mod:`smartlic.mqtt.url`.
"""
