"""A shard against a slow OpenAI-compatible server: its rows land as it goes, not at its end."""

from __future__ import annotations

import threading
from pathlib import Path

from conftest import make_config

from moaa.engine.methods import calls_per_prompt
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.shards import write_jsonl_atomic
from moaa.work.stage_shard import ShardJob, run_shard

PROMPTS = 40


def test_a_slow_shard_has_rows_on_disk_before_half_of_its_calls(tmp_path: Path):
    prompts = [
        {"prompt_id": f"p{i}", "messages": [{"role": "user", "content": f"Question {i}?"}]} for i in range(PROMPTS)
    ]
    shard = tmp_path / "shard-00000.jsonl"
    write_jsonl_atomic(shard, prompts)
    out = tmp_path / "work" / "sft" / "shard-00000"
    with OpenAITestServer(latency_s=0.05) as srv:
        config = make_config(tmp_path, srv.base_url, "endpoints.test.max_concurrency=16", "cache.enabled=false")
        calls = PROMPTS * calls_per_prompt(config.sft)["calls"]
        seen_at_first_row: list[int] = []
        finished = threading.Event()

        def watch() -> None:
            rows = out / "rows.jsonl"
            while not finished.wait(0.005):
                if rows.exists() and rows.stat().st_size:
                    seen_at_first_row.append(len(srv.requests))
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            summary = run_shard(ShardJob("sft", config, shard, out))
        finally:
            finished.set()
            watcher.join()
    assert summary.counts.rows == PROMPTS
    assert len(srv.requests) == calls
    assert seen_at_first_row and seen_at_first_row[0] < calls / 2, (seen_at_first_row, calls)
