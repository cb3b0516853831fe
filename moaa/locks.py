"""Exclusive locks on folders: an OS file lock (flock) on `<folder>/.moaa.lock`.

The kernel drops a flock when its process dies, SIGKILL included, so a lock left by a killed run
is free at once: there is no stale pid file to judge. The file also says who holds the lock (pid,
host, start time) so the one refused can name it. Used for a run's work folder (one run at a time),
a shard's output folder (a re-executed distributed shard waits for the first) and a data set's
folder (one version written at a time).

Usage: `with FolderLock(work_dir, "work folder").hold(wait=False): ...`
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from moaa.errors import MoaaError

log = logging.getLogger(__name__)

LOCK_NAME = ".moaa.lock"


class FolderBusy(MoaaError):
    """Another live process holds the folder's lock."""


class FolderLock:
    def __init__(self, folder: Path, what: str, name: str = LOCK_NAME):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / name
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self, wait: bool = False, advice: str = "wait for it to finish or stop it") -> Iterator[FolderLock]:
        """Hold the lock for the block; `wait`: block until free, else FolderBusy naming the holder."""
        self.acquire(wait, advice)
        try:
            yield self
        finally:
            self.release()

    def acquire(self, wait: bool = False, advice: str = "wait for it to finish or stop it") -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise FolderBusy(
                        f"{self.folder}: another moaa process is using this {self.what} ({holder}); {advice}"
                    ) from None
                log.info("%s %s is in use (%s); waiting for it", self.what, self.folder, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": stamp}).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race)
            self._fd = None


def _holder(fd: int) -> str:
    """'pid 123 on host, started 2026-01-01 12:00:00' from the lock file, or what is known."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it is still starting"
