"""Run an answer's code in a contained child process (`run_contained`).

Every run gets a fresh temporary folder (its only writable place, removed afterwards), an empty
environment (no keys; HOME and TMPDIR are the folder), resource limits (CPU seconds, memory,
file size, processes, open files, no core dumps), a wall-clock limit after which its whole process
tree is killed, and an output cap after which it is killed too. How far it is fenced off depends on
what the machine offers (`isolation`, chosen once per process by `auto`):

- bwrap: bubblewrap, where installed: new user, mount, network, PID, IPC and UTS namespaces,
  the root file system read-only, a private /tmp and /dev, the folder bound read-write;
- namespaces: `unshare` (util-linux) with unprivileged user namespaces: no network (a loopback
  that is down), its own PID namespace (killing it kills every process it made), every mount
  read-only but the folder, no capabilities, no further user namespaces (moaa.verify.jail);
- rlimits: neither is available (a container without user namespaces): resource limits and, for
  Python, an audit hook that refuses sockets, processes and writes outside the folder: a tripwire
  for honest mistakes, not a wall against hostile code. JavaScript is not run there.

None of them stops code from reading what your user can read; untrusted code at scale belongs in
a container or VM of its own (README: Verification).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moaa.config import SandboxConfig
from moaa.verify.isolation import (
    JAIL,
    UNSHARE,
    SandboxUnavailable,
    bwrap,
    namespace_problem,
    resolve_isolation,
    unshare,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
SETUP_FAILED = 125  # moaa.verify.jail's exit code when it could not lock the child down


@dataclass
class Contained:
    """What a contained run did: exit code (negative: killed by that signal), capped output,
    `limit`: the limit that stopped it ("" when none did), and the text of the files it was asked
    to leave (`collect`)."""

    returncode: int
    stdout: str
    stderr: str
    limit: str
    seconds: float
    isolation: str
    ended: dict[str, Any] = field(default_factory=dict)  # the jail's report: {"exit": code} or {"signal": name}
    files: dict[str, str] = field(default_factory=dict)

    @property
    def setup_failed(self) -> str:
        """The jail's line when it could not lock the child down ("" when it could)."""
        if self.returncode == SETUP_FAILED and not self.ended:
            return next((x for x in self.stderr.splitlines() if x.startswith("moaa sandbox setup failed")), "")
        return ""

    def stopped_by(self) -> str:
        """Why the run ended early, in words ("" when the code exited by itself)."""
        if self.limit:
            return self.limit
        if self.ended.get("limit") == "processes":
            return "the process limit"
        name = self.ended.get("signal")
        if name and "out of memory" in self.stderr.lower():
            return "the memory limit"
        if name:
            return {"SIGXCPU": "the CPU-time limit", "SIGKILL": "SIGKILL (the CPU-time limit, or out of memory)",
                    "SIGXFSZ": "the file-size limit"}.get(name, f"signal {name}")  # fmt: skip
        return self.setup_failed


def run_contained(
    command: list[str], files: dict[str, str], cfg: SandboxConfig, *, language: str = "python",
    collect: tuple[str, ...] = (),
) -> Contained:  # fmt: skip
    """Write `files` into a fresh folder, run `command` there contained, and return what it did
    and the text of the files named in `collect` (capped at the output limit)."""
    isolation = resolve_isolation(cfg.isolation)
    if isolation == "rlimits" and language != "python":
        raise SandboxUnavailable(
            f"{language} runs only with namespaces or bubblewrap (neither works here: {namespace_problem()})"
        )
    folder = Path(tempfile.mkdtemp(prefix="moaa-sandbox-"))
    try:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        done = _run(command, folder, cfg, isolation)
        done.files = {name: _read(folder / name, cfg.output_kb * 1024) for name in collect}
        return done
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _limits(cfg: SandboxConfig) -> dict[str, int]:
    memory = cfg.memory_mb * MIB
    return {
        "RLIMIT_CPU": cfg.cpu_s,
        "RLIMIT_DATA": memory,  # heap and private mappings; not V8's reserved address space
        "RLIMIT_FSIZE": cfg.file_mb * MIB,
        "RLIMIT_NPROC": cfg.processes,
        "RLIMIT_NOFILE": 256,
        "RLIMIT_CORE": 0,
    }


def _wrapped(command: list[str], folder: Path, cfg: SandboxConfig, isolation: str, status_fd: int) -> list[str]:
    """The command behind the jail (limits, mounts, capabilities), behind bwrap or unshare."""
    env = {"HOME": str(folder), "TMPDIR": str(folder), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    limits = _limits(cfg)
    if isolation == "rlimits":
        # Without a PID namespace the process count is this user's across the machine: add what runs now.
        limits["RLIMIT_NPROC"] = cfg.processes + _processes_of_user()
        env["MOAA_SANDBOX_GUARD"] = "1"  # the Python harness's audit hook (moaa/verify/harness)
    settings = {"namespaces": isolation == "namespaces", "own_pids": isolation != "rlimits", "folder": str(folder),
                "limits": limits, "env": env, "status_fd": status_fd}  # fmt: skip
    jail = [sys.executable, "-I", "-S", str(JAIL), json.dumps(settings), "--", *command]
    if isolation == "bwrap":
        binds = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        binds += ["--bind", str(folder), str(folder)]
        return [bwrap(), "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", *binds, *jail]
    if isolation == "namespaces":
        return [unshare(), *UNSHARE, *jail]
    return jail


def _run(command: list[str], folder: Path, cfg: SandboxConfig, isolation: str) -> Contained:
    started = time.monotonic()
    status_read, status_write = os.pipe()
    try:
        proc = subprocess.Popen(
            _wrapped(command, folder, cfg, isolation, status_write), cwd=folder, env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=(status_write,),
        )  # fmt: skip
    finally:
        os.close(status_write)
    try:
        return _watch(proc, cfg, isolation, started, status_read)
    finally:
        os.close(status_read)


def _watch(proc: subprocess.Popen, cfg: SandboxConfig, isolation: str, started: float, status_fd: int) -> Contained:
    budget = _Budget(cfg.output_kb * 1024, proc)
    readers = [
        threading.Thread(target=budget.drain, args=(pipe, kept), daemon=True)
        for pipe, kept in ((proc.stdout, budget.stdout), (proc.stderr, budget.stderr))
    ]
    for reader in readers:
        reader.start()
    limit = ""
    try:
        proc.wait(timeout=cfg.wall_s)
    except subprocess.TimeoutExpired:
        limit = f"the wall-time limit ({cfg.wall_s:g} s)"
    finally:
        _kill_group(proc)
        for reader in readers:
            reader.join(timeout=5)
    if budget.over:
        limit = f"the output limit ({cfg.output_kb} KiB)"
    out, err = (bytes(b).decode("utf-8", "replace") for b in (budget.stdout, budget.stderr))
    ended = _status(status_fd)
    return Contained(proc.returncode, out, err, limit, time.monotonic() - started, isolation, ended)


def _status(fd: int) -> dict[str, Any]:
    """The jail's report, once every holder of the pipe's write end is gone ({} when it wrote none)."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return {}
    try:
        report = json.loads(data) if data else {}
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


class _Budget:
    """Output of both pipes counted against one cap, the first KEEP bytes of each kept; past the
    cap the process group is killed."""

    KEEP = 16384

    def __init__(self, cap: int, proc: subprocess.Popen):
        self.cap, self.used, self.over, self.proc = cap, 0, False, proc
        self.stdout, self.stderr = bytearray(), bytearray()
        self.lock = threading.Lock()

    def drain(self, pipe, kept: bytearray) -> None:
        while chunk := pipe.read1(65536):
            with self.lock:
                self.used += len(chunk)
                kept += chunk[: max(0, self.KEEP - len(kept))]
                if self.used > self.cap and not self.over:
                    self.over = True
                    _kill_group(self.proc)
        pipe.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (bwrap and unshare take their namespace's processes with them)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _read(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _processes_of_user() -> int:
    """This user's processes now (Linux's /proc; 0 elsewhere, where RLIMIT_NPROC then binds tighter)."""
    uid, count = os.getuid(), 0
    if not os.path.isdir("/proc"):
        return 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count
