"""Errors the command layer maps to exit codes (the core never calls sys.exit)."""


class GanopsError(Exception):
    """A problem a user can act on; printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(GanopsError, ValueError):
    """A params file or value is unusable; the message names file and key."""


class DataError(GanopsError):
    """Input data is missing, corrupt or inconsistent; the message names the file."""


class GanopsWarning(UserWarning):
    """Something the user should know while the command carries on; shown as one `warning:` line."""


class ValidationFailed(GanopsError):
    """Data read fine but failed its expectations (exit 1)."""

    exit_code = 1
