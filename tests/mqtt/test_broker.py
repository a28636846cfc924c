"""The test broker helper's ports: distinct free ones, and every listener a config names."""

from __future__ import annotations

from smartlic.mqtt.broker import free_ports, listener_ports


def test_free_ports_are_distinct() -> None:
    ports = free_ports(50)

    assert len(ports) == len(set(ports))


def test_listener_ports_are_read_from_every_listener_line_in_order() -> None:
    config = "per_listener_settings true\nlistener 1884 127.0.0.1\ncafile x\nlistener 8883\n"

    assert [1884, 8883] == listener_ports(config)


def test_lines_that_only_start_like_a_listener_are_not_ports() -> None:
    assert [] == listener_ports("listener_allow_anonymous true\nlistener\n# listener 1\n")
