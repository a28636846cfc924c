"""smartlic agent."""
