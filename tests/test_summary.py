"""Run totals from the shards' DONE files: this run's part of a stage and its per-prompt time."""

from __future__ import annotations

from pathlib import Path

from moaa.fileio import write_json_atomic
from moaa.models.stats import RunStats
from moaa.work.run_plan import RunPlan
from moaa.work.summary import format_summary
from moaa.work.totals import collect, summarize
from tests.conftest import make_config


def done(folder: Path, prompts: int, resumed: int, start: float, end: float) -> tuple[Path, Path]:
    stats = RunStats()
    stats.record("test", "sft.proposer.propose@v1", calls=prompts - resumed, prompt_tokens=10)
    counts = {"prompts": prompts, "resumed": resumed, "rows": prompts, "failed": 0, "dropped": {}, "counters": {}}
    summary = {"counts": counts, "stats": stats.to_dict(), "seconds": end - start, "finished_at": end}
    write_json_atomic(folder / "DONE", summary)
    return folder.with_suffix(".jsonl"), folder


def test_per_prompt_seconds_count_this_runs_wall_time_and_prompts_only(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:9/v1")
    started = 1000.0
    shards = [
        done(tmp_path / "shard-00000", 10, 0, 500.0, 600.0),  # an earlier run's shard: not this run
        done(tmp_path / "shard-00001", 10, 4, 1001.0, 1013.0),  # resumed: 6 prompts answered now
        done(tmp_path / "shard-00002", 10, 0, 1002.0, 1017.0),  # in parallel with the one above
    ]
    plan = RunPlan(config, tmp_path, {"sft": shards}, {"read": 30, "kept": 30, "dropped": {}}, {}, started)
    totals = collect(plan)
    sft = totals.stages["sft"]
    assert sft["this_run"] == {"prompts": 16, "wall_seconds": 16.0}
    assert (sft["prompts"], sft["rows"]) == (30, 30)
    summary = summarize(plan, totals, elapsed=40.0)
    assert summary["per_prompt"]["seconds"] == 1.0  # 16 s over 16 prompts, not 40 s over 30
    assert "1.0s of SFT wall time this run" in format_summary(summary)
