"""Exceptions the CLI turns into one-line messages (exit code 2)."""


class TwinframeError(Exception):
    """Base class: a user-facing error whose message is one line."""


class ConfigError(TwinframeError, ValueError):
    """A config has an unknown field or an invalid value."""


class CheckpointError(TwinframeError):
    """A checkpoint file is unreadable, malformed, or does not match the model/config."""
