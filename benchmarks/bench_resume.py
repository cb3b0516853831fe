"""Resume: a finished config re-run (no model calls, a fraction of the cold time) and a run killed half-way.

1. Cold, then warm: one process runs the flow twice on the same config (Prefect already up, so
   both runs pay the same fixed cost). The warm run finds every shard DONE, asks no model and
   writes a new data set version. Targets: warm < 5% of cold; zero requests reach the server.
2. Killed: `moaa run`'s flow in a child process is SIGKILLed (with its process group) once half of
   the prompts have rows; a second run resumes. Finished prompts are skipped; of the unfinished
   ones, calls that had already been answered come from the request cache, the rest are re-asked.
   Target: requests of the resumed run <= (unfinished prompts) x (calls per prompt), and every
   prompt has exactly one row at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PrefectServer,
    TestServer,
    count_lines,
    figure,
    moa_raw,
    run_in_child,
    write_config,
    write_prompts,
)

NAME = "resume"
CALLS_PER_PROMPT = 4  # 3 proposers + aggregator


def run(work: Path, quick: bool, latency_ms: float = 50, **_: Any) -> list:
    count = 1_000 if quick else 4_000
    prompts = write_prompts(work / f"prompts-{count}.jsonl", count)
    figures = []
    with TestServer(latency_ms, 0, work / "requests.jsonl") as server, PrefectServer(work / "prefect") as prefect:
        figures += _finished(work / "finished", server, prefect, prompts)
        figures += _killed(work / "killed", server, prefect, prompts, count)
    return figures


def _finished(folder: Path, server: TestServer, prefect: PrefectServer, prompts: Path) -> list:
    config = write_config(folder / "config.yaml", moa_raw(folder, server.base_url, prompts, name="bench-resume"))
    before = server.chat_requests()
    got = run_in_child("benchmarks.common:pipeline_run", {"config_path": str(config), "runs": 2},
                       folder.with_suffix(".log"), env=prefect.env())  # fmt: skip
    cold, warm = got["runs"]
    warm_requests = server.chat_requests() - before - cold["summary"]["this_run"]["calls"]
    versions = (cold["summary"]["version"], warm["summary"]["version"])
    return [
        figure(NAME, "re-run of a finished config: time", warm["seconds"], "s", cold["seconds"], "baseline", "< 0.05",
               note=f"cold {cold['seconds']:.1f}s vs warm {warm['seconds']:.1f}s in one process; the warm run "
               f"writes a new data set version ({versions[0]} -> {versions[1]})"),
        figure(NAME, "re-run of a finished config: requests to the server", warm_requests, "requests", goal="= 0",
               note=f"model calls this run (summary): {warm['summary']['this_run']['calls']}"),
    ]  # fmt: skip


def _killed(folder: Path, server: TestServer, prefect: PrefectServer, prompts: Path, count: int) -> list:
    raw = moa_raw(folder, server.base_url, prompts, name="bench-killed")
    config = write_config(folder / "config.yaml", raw)
    kwargs = {"config_path": str(config)}

    def half_done() -> bool:
        return count_lines(Path(raw["run"]["work_dir"]).glob("*/*/sft/shard-*/rows.jsonl")) >= count // 2

    before = server.chat_requests()
    run_in_child("benchmarks.common:pipeline_run", kwargs, folder / "killed.log", kill_when=half_done,
                 env=prefect.env())  # fmt: skip
    first = server.chat_requests() - before
    done = count_lines(Path(raw["run"]["work_dir"]).glob("*/*/sft/shard-*/rows.jsonl"))
    left = count - done
    got = run_in_child("benchmarks.common:pipeline_run", kwargs, folder / "resumed.log", env=prefect.env())
    resumed = got["runs"][0]
    asked = server.chat_requests() - before - first
    summary = resumed["summary"]
    ids = [json.loads(line)["prompt_id"] for path in Path(raw["run"]["work_dir"]).glob("*/*/sft/shard-*/rows.jsonl")
           for line in path.open()]  # fmt: skip
    return [
        figure(NAME, "killed half-way, resumed: requests re-asked", asked, "requests", left * CALLS_PER_PROMPT,
               "ceiling", "<= 1",
               note=f"killed with {done:,} of {count:,} prompts written ({first:,} requests); the resumed run asked "
               f"{asked:,} for the {left:,} left (ceiling {CALLS_PER_PROMPT} per prompt), took "
               f"{summary['this_run']['cache_hits']:,} answers from the cache, in {resumed['seconds']:.1f}s"),
        figure(NAME, "killed half-way, resumed: distinct prompts with a row", len(set(ids)), "prompts", count,
               "target", "= 1", note=f"{len(ids):,} rows for {len(set(ids)):,} distinct prompt ids (no duplicates "
               f"when equal); the version has {summary['stages']['sft']['rows']:,} SFT rows"),
    ]  # fmt: skip
