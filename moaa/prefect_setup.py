"""Prefect settings for CLI runs: local ephemeral API, quiet logs, no tracebacks for user mistakes.

This is the thin integration module the style guide allows: it touches Prefect's logging, not
its API, and is imported only by the CLI before a flow runs.
"""

from __future__ import annotations

import logging
import os

from moaa.errors import MoaaError

_USER_ERRORS = ("MoaaError", "ConfigError", "InputError", "EndpointError", "FailureRateExceeded", "RunStopped")


class _UserErrorFilter(logging.Filter):
    """Drop Prefect's traceback records for MoaaError: the CLI prints those as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (MoaaError, KeyboardInterrupt)):
            return False
        text = record.getMessage()
        if "aborted by an interrupt signal" in text:
            return False  # Ctrl-C: the CLI says what was kept and how to resume
        return not any(name in text for name in _USER_ERRORS)


def quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    # The ephemeral API server is a subprocess; on a loaded 2-core machine it needs more than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import prefect.logging.configuration  # noqa: F401 - sets up Prefect's handlers first

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logging.getLogger(name).addFilter(_UserErrorFilter())
