"""The test server as a child process (its own GIL, killable): used by tests and benchmarks."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


class ServerProcess:
    """`python -m moaa.testing.openai_server ARGS` started at once; `base_url` once it prints READY."""

    __test__ = False  # not a pytest class

    def __init__(self, *args: str, log_path: Path | None = None, env: dict | None = None, cwd: Path | None = None):
        cmd = [sys.executable, "-m", "moaa.testing.openai_server", *args]
        self.log_path = Path(log_path) if log_path is not None else None
        if self.log_path is not None:
            cmd += ["--log", str(self.log_path)]
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(
                f"test server did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.base_url = line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def chat_requests(self) -> int:
        """Chat requests logged so far (needs `log_path`)."""
        if self.log_path is None or not self.log_path.exists():
            return 0
        with self.log_path.open() as fh:
            return sum(1 for line in fh if '"/v1/chat/completions"' in line)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
