"""Progress: plain log lines off a terminal (one per interval, per endpoint when several), a live panel on one."""

from __future__ import annotations

import io
import itertools
import re
import time

from moaa.models.stats import RunStats
from moaa.work.progress import Progress

STAGE_LINE = re.compile(
    r"^\[sft\] \d+/\d+ prompts \(\d+ failed\) \| calls \d+ \(cache \d+, retries \d+, failed \d+\) \| "
    r"tokens \d+ in / \d+ out \| \d+\.\d tok/s \| \$\d+\.\d{4} \(projected \$\d+\.\d{4}\) \| "
    r"\d+m\d{2}s( eta \d+m\d{2}s)?$"
)
ENDPOINT_LINE = re.compile(
    r"^\[sft\] endpoint (?P<name>[\w.-]+): calls \d+ \(cache \d+, retries \d+, failed \d+\) \| "
    r"tokens \d+ in / \d+ out \| \d+\.\d tok/s \| \$\d+\.\d{4}$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def work(progress: Progress, stats: RunStats, endpoints: list[str], prompts: int) -> None:
    """A stage's calls and finished prompts, spread over a few progress intervals."""
    for i in range(prompts):
        for name in endpoints:
            stats.record(
                name,
                "sft.proposer.propose@v1",
                latency=0.01,
                calls=1,
                requests=1,
                prompt_tokens=40,
                completion_tokens=20,
                cost=0.001,
            )
        if i == 0:
            stats.record(endpoints[0], "sft.proposer.propose@v1", retries=2, failures=1, cache_hits=1)
        progress.advance(failed=i == 0)
        time.sleep(0.06)


def test_plain_lines_with_one_line_per_endpoint(tmp_path):
    stream, stats = io.StringIO(), RunStats()
    with Progress("sft", 3, stats, interval_s=0.05, stream=stream) as progress:
        work(progress, stats, ["agg", "proposers"], 3)
    lines = stream.getvalue().splitlines()
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    stage = [i for i, line in enumerate(lines) if STAGE_LINE.match(line)]
    assert len(stage) >= 2  # periodic reports and the final one
    for i in stage:  # every report is the stage line followed by its endpoints, in name order
        names = [ENDPOINT_LINE.match(line).group("name") for line in lines[i + 1 : i + 3]]
        assert names == ["agg", "proposers"]
    assert len(lines) == 3 * len(stage)
    assert lines[-3].startswith(
        "[sft] 3/3 prompts (1 failed) | calls 6 (cache 1, retries 2, failed 1) | tokens 240 in / 120 out | "
    )
    assert "| $0.0060 (projected $0.0060) |" in lines[-3]
    assert lines[-2].startswith("[sft] endpoint agg: calls 3 (cache 1, retries 2, failed 1) | tokens 120 in / 60 out |")
    assert lines[-1].endswith("tok/s | $0.0030")


def test_one_endpoint_gives_one_line_per_interval():
    stream, stats = io.StringIO(), RunStats()
    with Progress("sft", 2, stats, interval_s=0.05, stream=stream) as progress:
        work(progress, stats, ["local"], 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(STAGE_LINE.match(line) for line in lines)


def test_live_shard_stats_count_until_the_end():
    given, live = RunStats(), RunStats()
    given.record("a", calls=2, prompt_tokens=10, completion_tokens=5, cost=0.5)  # shards finished earlier
    progress = Progress("sft", 4, given, stream=io.StringIO(), done_before=2)
    progress.track("shard-00001", live)
    live.record("a", calls=1, prompt_tokens=7, completion_tokens=3, cost=0.25)
    live.record("b", calls=1, prompt_tokens=1, completion_tokens=1, cost=0.0)
    progress.advance()
    counters = progress.endpoint_counters()
    assert (counters["a"].calls, counters["a"].prompt_tokens, counters["b"].calls) == (3, 17, 1)
    # Only this run's spending projects: $0.25 for 1 new prompt, 1 left -> 0.75 + 0.25.
    assert "3/4 prompts (0 failed) | calls 4 " in progress.line()
    assert "$0.7500 (projected $1.0000)" in progress.line()
    progress.track("shard-00001", RunStats())  # a retried shard replaces its earlier counters
    assert progress.endpoint_counters()["a"].calls == 2
    progress.untrack("shard-00001")
    assert set(progress.endpoint_counters()) == {"a"}


def test_terminal_panel_is_redrawn_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the panel cuts lines to the terminal's width; this one is 120 wide
    stream, stats = Terminal(), RunStats()
    with Progress("sft", 4, stats, interval_s=0.05, stream=stream) as progress:
        work(progress, stats, ["agg", "proposers"], 4)
    draws = stream.getvalue().split("\x1b[J")[:-1]  # every draw ends by clearing below the panel
    assert len(draws) >= 3 and draws[0].startswith("\r\x1b[2K")
    for before, draw in itertools.pairwise(draws):  # each redraw first goes back up over the previous panel
        assert draw.startswith(f"\x1b[{before.count(chr(10))}F\x1b[2K")
    last = [line.removeprefix("\x1b[2K") for line in draws[-1].split("F", 1)[1].splitlines()]
    assert len(last) == 5
    assert last[0].startswith("[sft] 4/4 prompts (1 failed)  ████████████████████████ 100.0%")
    assert last[1].startswith("  calls 8 (cache 1, retries 2, failed 1) | tokens 320 in / 160 out |")
    assert last[2].split() == [
        "endpoint",
        "calls",
        "cache",
        "retries",
        "failed",
        "in",
        "tok",
        "out",
        "tok",
        "tok/s",
        "cost",
    ]
    assert last[3].split()[:7] == ["agg", "4", "1", "2", "1", "160", "80"] and last[3].endswith("$0.0040")
    assert last[4].split()[:2] == ["proposers", "4"]


def test_a_finished_shard_is_folded_into_the_totals_and_let_go():
    given, live = RunStats(), RunStats()
    given.record("a", calls=2)
    progress = Progress("sft", 4, given, stream=io.StringIO())
    progress.track("shard-00001", live)
    live.record("a", calls=3, prompt_tokens=7)
    progress.settle("shard-00001")
    assert progress._live == {}  # thousands of shards are not kept
    counters = progress.endpoint_counters()
    assert (counters["a"].calls, counters["a"].prompt_tokens) == (5, 7)  # and still counted, once
    progress.settle("shard-00001")  # a second settle changes nothing
    assert progress.endpoint_counters()["a"].calls == 5
