"""Scale: the whole pipeline (3 proposers + aggregator MoA) on up to 100,000 prompts; peak RSS stays flat.

Each prompt count runs `moaa run`'s flow (threads task runner, default shard size 100, request
cache ON as it is by default) in a fresh process against the test server; the figure is that
process's peak RSS (`ru_maxrss`: the flow, its shards' engines and the data set writer; Prefect's
API server is a separate process, shared by the runs and not counted). Shards stream: a shard
holds only its own prompts and appends results one prompt at a time, and the data set version is
written by streaming the shards' files. Target: < 1 GiB at every count, and flat (the largest
count's peak over the smallest count's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import (
    GIB,
    MIB,
    PrefectServer,
    TestServer,
    figure,
    moa_raw,
    run_in_child,
    write_config,
    write_prompts,
)

NAME = "scale"


def counts_for(quick: bool, largest: int | None) -> list[int]:
    top = largest or (5_000 if quick else 100_000)
    return sorted({c for c in (1_000, 10_000, top) if c <= top} | {top})


def run(work: Path, quick: bool, latency_ms: float = 50, prompts: int | None = None, **_: Any) -> list:
    counts = counts_for(quick, prompts)
    results: dict[int, dict[str, Any]] = {}
    with TestServer(latency_ms) as server, PrefectServer(work / "prefect") as prefect:
        for count in counts:
            folder = work / f"n{count}"
            raw = moa_raw(folder, server.base_url, write_prompts(work / f"prompts-{count}.jsonl", count))
            raw["name"] = f"bench-scale-{count}"
            config = write_config(folder / "config.yaml", raw)
            got = run_in_child("benchmarks.common:pipeline_run", {"config_path": str(config)},
                               work / f"scale-{count}.log", timeout_s=6 * 3600, env=prefect.env())  # fmt: skip
            results[count] = got["runs"][0] | {"tree_peak_rss_bytes": got["tree_peak_rss_bytes"]}
    return _figures(results, latency_ms)


def _figures(results: dict[int, dict[str, Any]], latency_ms: float) -> list:
    figures = []
    for count, got in results.items():
        summary, seconds = got["summary"], got["seconds"]
        requests = summary["this_run"]["calls"]  # answered by the server (cache hits excluded)
        rss = got["maxrss_bytes"]
        figures.append(figure(
            NAME, f"peak RSS, {count:,} prompts", rss / MIB, "MiB", GIB / MIB, "target", "< 1",
            note=f"{summary['stages']['sft']['rows']:,} rows in {seconds:,.0f}s ({requests / seconds:,.0f} req/s, "
            f"{requests:,} requests); flow + its API server together peaked at "
            f"{got['tree_peak_rss_bytes'] / MIB:,.0f} MiB (sampled)",
            seconds=seconds, requests=requests, rows=summary["stages"]["sft"]["rows"],
        ))  # fmt: skip
    small, large = min(results), max(results)
    if large != small:
        growth = results[large]["maxrss_bytes"] / MIB
        figures.append(figure(
            NAME, f"peak RSS growth {small:,} -> {large:,} prompts", growth, "MiB",
            results[small]["maxrss_bytes"] / MIB, "baseline", "< 1.25",
            note=f"{large // small}x the prompts; flat = a ratio near 1",
        ))  # fmt: skip
        rate = results[large]
        ceiling = 64 / (latency_ms / 1000) / 4  # max_concurrency 64 / latency, 4 requests per prompt
        figures.append(figure(
            NAME, f"throughput through the flow, {large:,} prompts",
            rate["summary"]["stages"]["sft"]["rows"] / rate["seconds"], "prompts/s", ceiling, "ceiling",
            note=f"wall time {rate['seconds'] / 60:,.1f} min for {large:,} prompts (x4 requests each); ceiling = "
            "64 in flight / latency / 4 (a network-bound ideal; one process on a small machine is CPU-bound)",
        ))  # fmt: skip
    return figures
