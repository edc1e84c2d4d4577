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
