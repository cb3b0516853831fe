"""User-facing errors: one line that names the file, field or row and says what to do."""

from __future__ import annotations


class MoaaError(Exception):
    """A mistake the user can fix; the CLI prints it as one line, without a traceback."""

    exit_code = 2


class ConfigError(MoaaError):
    """The configuration is invalid (unknown key, wrong type, unknown endpoint, ...)."""


class InputError(MoaaError):
    """An input file or data set is missing, empty or malformed."""


class DamagedFile(InputError):
    """A file moaa wrote itself (a shard's rows, journal or DONE, the cache) that no longer reads: a torn
    or garbage line, a file that is not what it should be. `path` is the file."""

    def __init__(self, message: str, path: object):
        super().__init__(message)
        from pathlib import Path

        self.path = Path(str(path))


class EndpointError(MoaaError):
    """An endpoint refused a request in a way retrying cannot fix (401, 403, 404, 400)."""

    exit_code = 3


class FailureRateExceeded(MoaaError):
    """Too many prompts failed; the run stopped early to save budget."""

    exit_code = 4


class StorageError(MoaaError):
    """A folder moaa writes to failed (disk full, read-only, no permission); finished work is kept."""

    exit_code = 5


def storage_error(folder: object, exc: BaseException, setting: str) -> StorageError:
    """One line for an OSError or SQLite error writing under `folder`: the folder, the error, what to do."""
    import errno

    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    where = getattr(exc, "filename", None)
    detail = f"{text}{f' ({name})' if name else ''}{f' writing {where}' if where else ''}"
    return StorageError(
        f"{folder}: {detail}; free space or fix its permissions (or set {setting} to another folder), "
        "then run the same command again: finished work is kept"
    )
