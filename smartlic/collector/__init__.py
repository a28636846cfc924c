"""smartlic collector."""
