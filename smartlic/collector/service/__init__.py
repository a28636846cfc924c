"""The collector service: MQTT ingest → verify → decide → commit → signed notices."""
