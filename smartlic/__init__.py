"""smartlic: open, self-hostable Smart Licensing."""
