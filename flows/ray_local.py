"""A local Ray cluster for `run.task_runner: ray` without `run.address`, which no kill leaves behind.

Ray's own local start (`ray.init()` in the driver) leaves its node processes running when the driver
is killed: after `kill -9` of a run, `ray::DashboardAgent` and `ray::RuntimeEnvAgent` (~200 MB, deaf to
SIGTERM) stayed. So moaa starts the node itself: a small supervisor (this module, `python -m
flows.ray_local`) in a session of its own runs `ray start --head --block` there, every Ray process in
that session (workers in groups of their own), and holds the read end of a pipe whose write end only
the moaa process has. When moaa ends, however it ends (its last exit, Ctrl-C, kill -9), the pipe
closes and the supervisor SIGKILLs the whole session and waits until none of it runs. Ports are free
ones picked here, so two runs (or two users) on one machine do not collide; the dashboard is off and
usage stats are not sent.

The flow then connects with prefect-ray's RayTaskRunner(address=...) like to any cluster; the
workers inherit moaa's environment (PYTHONPATH, key variables) and working folder.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from moaa.errors import MoaaError

READY = "This command will now block forever"  # what `ray start --block` prints once its node runs


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalRay:
    """A Ray head node on 127.0.0.1 owned by this process (see the module docstring)."""

    def __init__(self, cpus: int, log_dir: Path):
        self.cpus, self.log_dir = cpus, log_dir
        self.address = ""
        self._proc: subprocess.Popen | None = None
        self._pipe: int | None = None

    def start(self, timeout_s: float = 120.0) -> str:
        gcs, client, dashboard, agent, metrics = _free_ports(5)
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            f"--num-cpus={self.cpus}", "--include-dashboard=false", "--disable-usage-stats",
            f"--ray-client-server-port={client}", f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
            "--object-store-memory=100000000",
        ]  # fmt: skip
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"ray-{os.getpid()}.log"
        read, write = os.pipe()
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        with log.open("w", encoding="utf-8") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "flows.ray_local", *cmd], stdin=read, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env, cwd=Path.cwd(), pass_fds=(),
            )  # fmt: skip
        os.close(read)
        self._pipe = write  # held by this process only: it closes when the process ends, however
        os.set_inheritable(write, False)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while READY not in log.read_text(encoding="utf-8", errors="replace"):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:])
                self.stop()
                raise MoaaError(f"the local Ray node did not start (see {log}): {tail[-300:]}")
            time.sleep(0.5)
        self.address = f"127.0.0.1:{gcs}"
        return self.address

    def stop(self) -> None:
        """End the node now (closing the pipe; the supervisor kills its session)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)
        if self._proc is not None:
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc = None


_local: LocalRay | None = None
_lock = threading.Lock()


def local_ray_address(cpus: int) -> str:
    """The address of this process's local Ray node, started on first use (one per process)."""
    global _local
    with _lock:
        if _local is None:
            from moaa.local.model import moaa_home

            node = LocalRay(cpus, moaa_home() / "logs")
            node.start()
            _local = node
        return _local.address


def _session_members() -> list[int]:
    """Every other live process in this process's session (Ray puts each worker in a group of its own)."""
    me, session, found = os.getpid(), os.getsid(0), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] not in ("Z", "X") and int(fields[4]) == session:  # state, ..., session id
                found.append(int(entry.name))
    return found


def _end_session(wait_s: float = 10.0) -> None:
    """SIGKILL every process of this session and wait until none is left running, so that the owner's
    `stop()` returning means the node, its agents and its workers are gone, not only told to go."""
    deadline = time.monotonic() + wait_s
    while (members := _session_members()) and time.monotonic() < deadline:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _supervise(cmd: list[str]) -> None:
    """Run `cmd` (ray start --block) in this session until stdin closes, then kill the whole session.

    Killing the process group is not enough: Ray's workers (`ray::IDLE`, `ray::<task>`) each get a group
    of their own and only exit once they notice the raylet is gone, some time later."""
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass  # nothing is ever written: EOF is the owner's end
    finally:
        child.poll()
        _end_session()
        os.killpg(os.getpgrp(), signal.SIGKILL)  # anything left in this group, and this supervisor


if __name__ == "__main__":
    _supervise(sys.argv[1:])
