"""Planning a run streams the prompts (issue 8): shards are written from the source without a list of
every prompt, an unchanged shard is not rewritten, and planning memory stays flat as prompts grow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moaa.work.run_plan import plan_run
from moaa.work.shards import read_jsonl
from tests.conftest import ROOT, base_raw, make_config


def write_prompts(path: Path, count: int, chars: int = 40) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            text = f"Explain topic {i} to a student. " + "Add detail. " * (chars // 12)
            fh.write(json.dumps({"id": f"q{i}", "category": "bench", "prompt": text}) + "\n")
    return path


def test_replan_keeps_identical_shards_and_no_spill(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 25)
    config = make_config(
        tmp_path,
        "http://127.0.0.1:9/v1",
        f"prompts.path={prompts}",
        "prompts.limit=null",
        "run.shard_size=4",
        preference={
            "enabled": True,
            "policy": {"endpoint": "test"},
            "limit": 10,
            "scorer": {"judges": [{"endpoint": "test"}]},
        },
    )
    plan = plan_run(config)
    files = [inp for shards in plan.shards.values() for inp, _ in shards]
    assert [len(plan.shards[s]) for s in ("sft", "preference")] == [7, 3]
    sft_ids = [r["prompt_id"] for inp, _ in plan.shards["sft"] for r in read_jsonl(inp)]
    pref_ids = [r["prompt_id"] for inp, _ in plan.shards["preference"] for r in read_jsonl(inp)]
    assert len(sft_ids) == 25 and pref_ids == sft_ids[:10] and plan.prompt_counts["kept"] == 25
    assert not list(Path(config.run.work_dir).glob(".prompts-*"))  # the spill is gone
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    changed = plan.shards["sft"][2][0]
    changed.write_text(changed.read_text().replace("student", "pupil"))  # a shard with other content
    changed_stamp = changed.stat().st_ino, changed.stat().st_mtime_ns

    again = plan_run(config)
    assert again.work_dir == plan.work_dir and again.shards == plan.shards
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files if p != changed} == {
        p: s for p, s in stamps.items() if p != changed
    }
    assert (changed.stat().st_ino, changed.stat().st_mtime_ns) != changed_stamp
    assert "pupil" not in changed.read_text()  # rewritten from the source
    assert not list(Path(config.run.work_dir).glob(".prompts-*"))


PLAN_CHILD = """
import json, sys, tracemalloc
from moaa.config import parse_config
from moaa.work.run_plan import plan_run
config = parse_config(json.loads(sys.argv[1]))
tracemalloc.start()
plan = plan_run(config)
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "kept": plan.prompt_counts["kept"]}))
"""


def planning_peak(tmp_path: Path, count: int) -> tuple[int, int]:
    """(tracemalloc peak of plan_run in a fresh process, prompt file size) for `count` prompts."""
    folder = tmp_path / f"n{count}"
    folder.mkdir()
    prompts = write_prompts(folder / "p.jsonl", count, chars=600)
    raw = base_raw(folder) | {"name": f"mem-{count}"}
    raw["prompts"] = {"path": str(prompts)}
    raw["run"] = {"work_dir": str(folder / "work"), "shard_size": 100}
    done = subprocess.run(
        [sys.executable, "-c", PLAN_CHILD, json.dumps(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kept"] == count
    return result["peak"], prompts.stat().st_size


@pytest.mark.slow
def test_planning_memory_does_not_grow_with_the_prompts(tmp_path):
    small_peak, small_bytes = planning_peak(tmp_path, 1_000)
    large_peak, large_bytes = planning_peak(tmp_path, 15_000)
    growth, data = large_peak - small_peak, large_bytes - small_bytes
    # Holding the prompts costs several times their file size (text, rows, Prompt objects, records);
    # streaming keeps ~100 bytes per prompt (a dedup digest, then an id) whatever the prompt's length.
    assert growth < 0.25 * data, f"planning peak grew {growth / 2**20:.1f} MiB for {data / 2**20:.1f} MiB of prompts"
    assert growth / (15_000 - 1_000) < 300  # bytes per extra prompt


def test_another_shard_size_is_another_work_folder(tmp_path):
    """Shard output folders are numbered; a new split must never meet the old split's DONE files."""
    prompts = write_prompts(tmp_path / "p.jsonl", 10)
    plans = [
        plan_run(
            make_config(
                tmp_path,
                "http://127.0.0.1:9/v1",
                f"prompts.path={prompts}",
                "prompts.limit=null",
                f"run.shard_size={size}",
            )
        )  # fmt: skip
        for size in (3, 4, 3)
    ]
    assert plans[0].work_dir != plans[1].work_dir and plans[0].work_dir == plans[2].work_dir
    assert [len(p.shards["sft"]) for p in plans] == [4, 3, 4]
