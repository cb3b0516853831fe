"""moaa's log records in the Prefect flow run that a deployment started: served and worker runs show
their progress, warnings and summary in Prefect's UI and `prefect flow-run logs`, not only on the
terminal of `moaa deploy --serve`.

moaa logs through the standard library (`logging.getLogger(__name__)`, `moaa.progress` for the
periodic progress lines); Prefect sends only its own run loggers' records to its API. For the
duration of a scheduled run, `flow_run_logs` hands the `moaa` loggers' INFO records, from any thread
(the shards' tasks, the progress reporter, the version write), to Prefect's API log handler under
that flow run's id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

LOGGERS = ("moaa", "moaa.progress")


def _handler_class() -> type:
    from prefect.logging.handlers import APILogHandler

    class FlowRunLogs(APILogHandler):
        """Prefect's API log handler, every record filed under one flow run (whatever thread made it)."""

        def __init__(self, flow_run_id: Any):
            super().__init__()
            self.flow_run_id = flow_run_id

        def emit(self, record: logging.LogRecord) -> None:
            if not getattr(record, "flow_run_id", None):
                record.flow_run_id = self.flow_run_id
            super().emit(record)

    return FlowRunLogs


@contextlib.contextmanager
def flow_run_logs(level: int = logging.INFO) -> Iterator[None]:
    """Send the moaa loggers' records (`level` and up) to the current flow run's logs in Prefect."""
    from prefect.context import get_run_context

    flow_run = getattr(get_run_context(), "flow_run", None)
    if flow_run is None:  # not inside a flow run: nothing to attach to
        yield
        return
    handler = _handler_class()(flow_run.id)
    handler.setLevel(level)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > level:
            lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(old)
        handler.flush()
