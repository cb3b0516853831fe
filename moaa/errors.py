"""User-facing errors: one line that names the file, field or row and says what to do."""

from __future__ import annotations


class MoaaError(Exception):
    """A mistake the user can fix; the CLI prints it as one line, without a traceback."""

    exit_code = 2


class ConfigError(MoaaError):
    """The configuration is invalid (unknown key, wrong type, unknown endpoint, ...)."""


class InputError(MoaaError):
    """An input file or data set is missing, empty or malformed."""


class EndpointError(MoaaError):
    """An endpoint refused a request in a way retrying cannot fix (401, 403, 404, 400)."""

    exit_code = 3


class FailureRateExceeded(MoaaError):
    """Too many prompts failed; the run stopped early to save budget."""

    exit_code = 4
