"""Errors the CLI reports as one clear line, and the exit codes of every `massl` command:
`EXIT_CODES`, one meaning per code, is the only list of them (`massl --help` prints it)."""

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_FILE_SYSTEM = 3
EXIT_BUG = 4
EXIT_CODES = {
    EXIT_OK: "success (a diverged training is a result; check-data: no problems, warnings allowed)",
    EXIT_PROBLEMS: "check-data read the dataset and found problems in it (listed, each naming its file)",
    EXIT_BAD_INPUT: "bad input: a path that is not what the command needs (not found, a file for a folder, "
                    "the wrong layout), data that cannot be used, a bad config value or option",
    EXIT_FILE_SYSTEM: "file-system error (disk full, read-only folder, no permission)",
    EXIT_BUG: "internal error, a bug in massl (the traceback is printed: please report it)",
}


class MasslError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing file)."""


class ConfigError(MasslError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(MasslError, ValueError):
    """A dataset file or folder is missing, unreadable or inconsistent. The message names it."""
