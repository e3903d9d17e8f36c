"""Errors the CLI reports as one clear line and a non-zero exit (no traceback)."""


class MasslError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing file)."""


class ConfigError(MasslError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(MasslError, ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent. The message names it."""
