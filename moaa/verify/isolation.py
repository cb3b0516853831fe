"""Which isolation the code sandbox can use on this machine: bubblewrap, Linux namespaces via
`unshare`, or resource limits alone (moaa.verify.sandbox says what each one fences off).

Each is tried once per process (a real run of the jail, moaa.verify.jail, under it), so a kernel
that forbids unprivileged user namespaces or a container without them is found out before any
answer's code runs, and named.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

JAIL = Path(__file__).with_name("jail.py")
UNSHARE = ("--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc")


class SandboxUnavailable(Exception):
    """The isolation asked for does not work on this machine (the check is then unverifiable)."""


def resolve_isolation(asked: str) -> str:
    """The isolation to use: `asked`, or the best that works here for auto; SandboxUnavailable when
    the one named does not work."""
    if asked == "auto":
        return _best_isolation()
    problem = {"bwrap": _bwrap_problem, "namespaces": namespace_problem, "rlimits": lambda: ""}[asked]()
    if problem:
        raise SandboxUnavailable(f"verify.sandbox.isolation {asked}: {problem}")
    return asked


@functools.cache
def _best_isolation() -> str:
    for name, problem in (("bwrap", _bwrap_problem), ("namespaces", namespace_problem)):
        if not problem():
            return name
    log.warning(
        "code checks run with resource limits only (no bubblewrap; %s): see the README's Verification section",
        namespace_problem(),
    )
    return "rlimits"


def bwrap() -> str:
    return shutil.which("bwrap") or "bwrap"


def unshare() -> str:
    return shutil.which("unshare") or "unshare"


@functools.cache
def _bwrap_problem() -> str:
    if not shutil.which("bwrap"):
        return "bubblewrap (bwrap) is not installed"
    return _try([bwrap(), "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "true"], "bubblewrap does")


@functools.cache
def namespace_problem() -> str:
    """Why the jail cannot run under `unshare` here ("" when it can)."""
    if not sys.platform.startswith("linux"):
        return "Linux namespaces need Linux"
    if not shutil.which("unshare"):
        return "util-linux's unshare is not installed"
    folder = tempfile.mkdtemp(prefix="moaa-sandbox-probe-")
    try:
        settings = {"namespaces": True, "folder": folder, "limits": {}, "env": {}}
        jail = [sys.executable, "-I", "-S", str(JAIL), json.dumps(settings), "--", "/bin/true"]
        return _try([unshare(), *UNSHARE, *jail], "unprivileged user namespaces do")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _try(argv: list[str], subject: str) -> str:
    """ "" when `argv` runs to exit 0, else "<subject> not work here (<its last line>)"."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{subject} not work here ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"{subject} not work here ({last})"
    return ""
