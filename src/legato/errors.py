"""Exceptions whose message is meant for the user, as one line."""


class LegatoError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class ConfigError(LegatoError):
    """A parameter file or command-line value is invalid."""


class DataError(LegatoError):
    """An input file is missing, unreadable, or has the wrong content."""
