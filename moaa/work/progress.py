"""Progress of a stage: prompts done/total, calls, cache hits, retries, failures, tokens, tokens/s,
cost so far and projected, overall and per endpoint.

On a terminal it is a small panel redrawn in place (plain ANSI: a bar, the totals, one row per
endpoint). Anywhere else (CI, Prefect workers, pipes) it is one plain log line every `interval_s`
seconds, plus one line per endpoint when several are in use, e.g.

    [sft] 40/100 prompts (1 failed) | calls 160 (cache 4, retries 2, failed 1) | tokens 9120 in /
        20480 out | 341.3 tok/s | $0.0211 (projected $0.0527) | 1m00s eta 1m30s
    [sft] endpoint judge: calls 40 (cache 0, retries 0, failed 0) | tokens 3000 in / 400 out |
        6.7 tok/s | $0.0010

(each on one line).

Counters come from the `stats` given (shards already finished) plus the live RunStats of shards
that are running (`track`/`untrack`), so a long shard shows its calls as they happen. Rates and
the projected cost count only this run's work, not what a resumed run had done before.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TextIO

from moaa.models.stats import Counter, RunStats

_BAR = 24  # characters of the terminal progress bar
# Every periodic report is also a record of this logger, which prints nothing by itself (no handler,
# no propagation: the stream already has the lines); a scheduled flow run hands it to Prefect, so a
# served run's progress is in its logs there (flows.run_logs).
progress_log = logging.getLogger("moaa.progress")
progress_log.propagate = False
_ROW = "  {:<18}{:>8}{:>7}{:>8}{:>7}{:>11}{:>11}{:>9}{:>11}"  # a row of the terminal's endpoint table


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
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: dict[str, RunStats] = {}
        self._drawn = 0  # lines of the panel on screen (terminal only)
        self._base = self.endpoint_counters()  # what was done before this run: excluded from rates

    # ------------------------------------------------------------ counting

    def advance(self, failed: bool = False) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)

    def track(self, key: str, stats: RunStats) -> None:
        """Show a running shard's live counters (a retried shard replaces its earlier entry)."""
        with self._lock:
            self._live[key] = stats

    def untrack(self, key: str) -> None:
        """Stop showing a shard's live counters (once `stats` holds its finished summary)."""
        with self._lock:
            self._live.pop(key, None)

    def settle(self, key: str) -> None:
        """Fold a finished shard's live counters into the totals and stop tracking it, so a run of
        thousands of shards neither keeps every shard's stats nor re-adds them at each redraw."""
        with self._lock:
            stats = self._live.pop(key, None)
            if stats is not None:
                self.stats.merge(stats.to_dict())

    def endpoint_counters(self) -> dict[str, Counter]:
        """Per endpoint: the given stats plus every tracked shard's live stats."""
        with self._lock:
            sources = [self.stats, *self._live.values()]
        out: dict[str, Counter] = {}
        for stats in sources:
            for name, counts in stats.to_dict()["endpoints"].items():
                out.setdefault(name, Counter()).add(counts)
        return dict(sorted(out.items()))

    # ------------------------------------------------------------ text

    def line(self) -> str:
        """The stage's one-line summary (what a log gets every interval)."""
        counters = self.endpoint_counters()
        t, base = _total(counters.values()), _total(self._base.values())
        elapsed = max(time.monotonic() - self.started, 1e-9)
        new_done = max(self.done - self._start_done, 0)
        remaining = max(self.total - self.done, 0)
        spent = t.cost - base.cost
        projected = t.cost + (spent / new_done * remaining if new_done else 0.0)
        eta = f" eta {_clock(elapsed / new_done * remaining)}" if new_done and remaining else ""
        rate = (t.completion_tokens - base.completion_tokens) / elapsed
        return (
            f"[{self.stage}] {self.done}/{self.total} prompts ({self.failed} failed) | "
            f"calls {t.calls} (cache {t.cache_hits}, retries {t.retries}, failed {t.failures}) | "
            f"tokens {t.prompt_tokens} in / {t.completion_tokens} out | {rate:.1f} tok/s | "
            f"${t.cost:.4f} (projected ${projected:.4f}) | {_clock(elapsed)}{eta}{self.batch_text()}"
            f"{self.wait_text()}"
        )

    def wait_text(self) -> str:
        """' | waiting 58 s for endpoint X (HTTP 429, Retry-After 58 s)' while a retry waits (longest first)."""
        with self._lock:
            sources = [self.stats, *self._live.values()]
        longest: dict[str, tuple[float, str]] = {}
        for stats in sources:
            for name, (left, why) in stats.waiting().items():
                if left >= 1 and left > longest.get(name, (0.0, ""))[0]:
                    longest[name] = (left, why)
        parts = [f"waiting {math.ceil(left)} s for endpoint {name} ({why})" for name, (left, why) in longest.items()]
        return "".join(f" | {part}" for part in parts)

    def batch_text(self) -> str:
        """' | batches: 1 validating (40 req), 2 in_progress (80 req), ...' while any is unfinished."""
        with self._lock:
            sources = [self.stats, *self._live.values()]
        merged = RunStats()
        for stats in sources:
            merged.batches.update(stats.batches)
        states = merged.batch_states()
        if not set(states) - {"completed", "failed", "expired", "cancelled"}:
            return ""
        order = ("validating", "in_progress", "finalizing", "cancelling", "completed", "expired", "cancelled", "failed")
        parts = [f"{states[s]['batches']} {s} ({states[s]['requests']} req)" for s in order if s in states]
        return " | batches: " + ", ".join(parts)

    def endpoint_lines(self) -> list[str]:
        """One plain line per endpoint, same fields as `line`."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out = []
        for name, c in self.endpoint_counters().items():
            rate = (c.completion_tokens - self._base.get(name, Counter()).completion_tokens) / elapsed
            out.append(
                f"[{self.stage}] endpoint {name}: calls {c.calls} (cache {c.cache_hits}, retries {c.retries}, "
                f"failed {c.failures}) | tokens {c.prompt_tokens} in / {c.completion_tokens} out | "
                f"{rate:.1f} tok/s | ${c.cost:.4f}"
            )
        return out

    def lines(self) -> list[str]:
        """What a log gets each interval: the stage line, then per-endpoint lines if several are used."""
        per_endpoint = self.endpoint_lines()
        return [self.line(), *(per_endpoint if len(per_endpoint) > 1 else [])]

    def panel(self) -> list[str]:
        """The terminal panel: a bar with the stage line below it and a table of endpoints."""
        share = self.done / self.total if self.total else 1.0
        filled = int(round(_BAR * min(share, 1.0)))
        head, _, rest = self.line().partition(" | ")
        lines = [f"{head}  {'█' * filled}{'░' * (_BAR - filled)} {share:5.1%}", f"  {rest}"]
        counters = self.endpoint_counters()
        if counters:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            lines.append(
                _ROW.format("endpoint", "calls", "cache", "retries", "failed", "in tok", "out tok", "tok/s", "cost")
            )
            for name, c in counters.items():
                rate = (c.completion_tokens - self._base.get(name, Counter()).completion_tokens) / elapsed
                cells = (c.calls, c.cache_hits, c.retries, c.failures, c.prompt_tokens, c.completion_tokens)
                lines.append(_ROW.format(name[:17], *cells, f"{rate:.1f}", f"${c.cost:.4f}"))
        return lines

    # ------------------------------------------------------------ output

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit()

    def _emit(self) -> None:
        with self._emit_lock:  # the final report must not interleave with a periodic one
            if self.tty:
                self._redraw(self.panel())
            else:
                lines = self.lines()
                self.stream.write("".join(text + "\n" for text in lines))
                for text in lines:
                    progress_log.info("%s", text)
            self.stream.flush()

    def _redraw(self, lines: list[str]) -> None:
        """Draw the panel over the previous one (lines cut to the terminal width so none wraps)."""
        width = max(shutil.get_terminal_size((120, 24)).columns - 1, 20)
        up = f"\x1b[{self._drawn}F" if self._drawn else "\r"
        body = "".join("\x1b[2K" + text[:width] + "\n" for text in lines)
        self.stream.write(up + body + "\x1b[J")  # clear what a longer earlier panel left below
        self._drawn = len(lines)

    def __enter__(self) -> Progress:
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"progress-{self.stage}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)
        self._emit()


def _total(counters) -> Counter:
    total = Counter()
    for c in counters:
        total.add(asdict(c))
    return total


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


ProgressHook = Callable[[bool], None]
