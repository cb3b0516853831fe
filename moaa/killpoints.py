"""Named points where a test can SIGKILL moaa mid-write: `MOAA_KILL_AT=renamed` (see tests/test_kill_resume.py).

A crash-safety claim is only as good as the points it was tried at; the writers name theirs
(`kill_point("renamed")`) and this does nothing unless the variable names that point.
"""

from __future__ import annotations

import os
import signal


def kill_point(name: str) -> None:
    """SIGKILL this process when $MOAA_KILL_AT names `name` (a test's fault injection)."""
    if os.environ.get("MOAA_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
