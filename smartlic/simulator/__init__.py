"""smartlic simulator."""
