"""Errors the user can act on. Each message is one line: what is wrong and what to do."""


class ShegError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with code 2."""


class BadInput(ShegError):
    """An input file or argument is unusable."""


class CheckpointError(ShegError):
    """A checkpoint or model folder is missing, corrupt or does not match the network."""


class DeviceError(ShegError):
    """The requested compute device is not available."""


class Cancelled(ShegError):
    """Generation was cancelled by the caller."""


def os_error_line(exc: OSError) -> str:
    """One line for a failed file operation: which file, what the system said, what to do."""
    what = exc.strerror or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    hint = {13: "choose a folder you can write to", 1: "choose a folder you can write to",
            28: "free some disk space", 30: "choose a folder on a writable disk", 21: "give a file name, not a folder",
            2: "check the path"}.get(exc.errno or 0, "check the path and its permissions")
    return f"cannot use{where}: {what}: {hint}"
