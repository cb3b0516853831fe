"""Progress of a stage: prompts done/total, calls, cache hits, retries, failures, tokens, tokens/s,
cost so far and projected — as one readable log line every few seconds (CI, Prefect workers) or a
line redrawn in place on a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from moaa.stats import RunStats


class Progress:
    """Counts finished prompts of one stage and reports periodically from a daemon thread."""

    def __init__(
        self,
        stage: str,
        total: int,
        stats: RunStats,
        interval_s: float = 10.0,
        stream: TextIO | None = None,
        done_before: int = 0,
    ):
        self.stage = stage
        self.total = total
        self.stats = stats
        self.done = done_before
        self.failed = 0
        self._start_done = done_before
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def advance(self, failed: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)

    def line(self) -> str:
        t = self.stats.totals()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        new_done = max(self.done - self._start_done, 0)
        rate = t.completion_tokens / elapsed
        remaining = self.total - self.done
        projected = t.cost + (t.cost / new_done * remaining if new_done else 0.0)
        eta = f" eta {_clock(elapsed / new_done * remaining)}" if new_done and remaining else ""
        return (
            f"[{self.stage}] {self.done}/{self.total} prompts ({self.failed} failed) | "
            f"calls {t.calls} (cache {t.cache_hits}, retries {t.retries}, failed {t.failures}) | "
            f"tokens {t.prompt_tokens} in / {t.completion_tokens} out | {rate:.1f} tok/s | "
            f"${t.cost:.4f} (projected ${projected:.4f}) | {_clock(elapsed)}{eta}"
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit()

    def _emit(self, final: bool = False) -> None:
        text = self.line()
        if self.tty and not final:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(("\r\x1b[2K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"progress-{self.stage}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)
        self._emit(final=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


ProgressHook = Callable[[bool], None]
