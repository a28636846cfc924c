"""MQTT topic names (MQTT 3.1.1 and 5 alike).

Each device publishes on ``<prefix>/d/<device id>/up`` and subscribes to
``<prefix>/d/<device id>/down``; its MQTT client id is its device id, so a Mosquitto ACL of
``pattern write <prefix>/d/%c/up`` and ``pattern read <prefix>/d/%c/down`` confines it to its
own topics. Collectors subscribe through a shared subscription (MQTT 5 §4.8.2; Mosquitto
accepts it from 3.1.1 clients too) so several collectors split the devices' uplink traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smartlic.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from smartlic.protocol.identity import check_device_id

DEFAULT_PREFIX: Final = "smartlic/v1"
DEFAULT_SHARE_GROUP: Final = "smartlic-collectors"
_WILDCARDS: Final = frozenset("+#")


def _check_level_text(what: str, value: str) -> None:
    if not value or _WILDCARDS & set(value) or "\x00" in value:
        raise LocalProtocolError(
            ErrorCode.INVALID_ARGUMENT, f"{what} {value!r} must be non-empty, without + # or NUL"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        _check_level_text("topic prefix", self.prefix)
        if self.prefix.startswith(("$", "/")) or self.prefix.endswith("/"):
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"topic prefix {self.prefix!r} must not start with $ or /",
            )

    def uplink(self, device_id: str) -> str:
        return f"{self.prefix}/d/{check_device_id(device_id)}/up"

    def downlink(self, device_id: str) -> str:
        return f"{self.prefix}/d/{check_device_id(device_id)}/down"

    @property
    def uplink_filter(self) -> str:
        return f"{self.prefix}/d/+/up"

    def shared_uplink_filter(self, group: str = DEFAULT_SHARE_GROUP) -> str:
        _check_level_text("share group", group)
        if "/" in group:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "share group cannot contain /")
        return f"$share/{group}/{self.uplink_filter}"

    def device_of_uplink(self, topic: str) -> str:
        """The device id in an uplink topic; a topic of another shape is the sender's error."""
        return self._device_of(topic, "up")

    def device_of_downlink(self, topic: str) -> str:
        return self._device_of(topic, "down")

    def _device_of(self, topic: str, direction: str) -> str:
        if type(topic) is not str:
            raise RemoteProtocolError(ErrorCode.MALFORMED_TOPIC, "a topic name is text")
        head = f"{self.prefix}/d/"
        tail = f"/{direction}"
        if not (topic.startswith(head) and topic.endswith(tail)):
            raise RemoteProtocolError(
                ErrorCode.MALFORMED_TOPIC, f"{topic!r} is not a smartlic {direction}link topic"
            )
        device_id = topic[len(head) : -len(tail)]
        try:
            return check_device_id(device_id)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(ErrorCode.MALFORMED_TOPIC, exc.message) from None
