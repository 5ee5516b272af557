"""Data: sources, the prepared format, Great Expectations validation."""
