"""Startup: what `moaa run` gains by beginning its SFT shards before Prefect's API server starts.

The whole `moaa run` CLI on the throughput benchmark's MoA 3+1 (one 50 ms test server, 64 in flight,
cache off so that every run asks every call), with the early start (the default) and without it
(`MOAA_EARLY_START=0`: the shards wait for the flow), alternating within each round after one
warm-up pair on the shared `PREFECT_HOME`. Measured at the test server: the first and the last call
after the command; and the whole process's wall time. Default 3 rounds of 1,000 prompts (~2
minutes); `--quick` 2 rounds of 200.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.bench_throughput import Arrivals
from benchmarks.common import ROOT, TestServer, figure, moa_raw, run_sampled, write_config, write_prompts

NAME = "startup"
VARIANTS = {"early": "1", "late": "0"}  # MOAA_EARLY_START


def run(work: Path, quick: bool, latency_ms: float = 50, prompts: int | None = None, rounds: int | None = None,
        **_: Any) -> list:  # fmt: skip
    count = prompts or (200 if quick else 1000)
    rounds = rounds or (2 if quick else 3)
    prompts_path = write_prompts(work / f"prompts-{count}.jsonl", count)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    with TestServer(latency_ms, 0, work / "server.jsonl") as server:
        arrivals = Arrivals(work / "server.jsonl")
        for r in range(rounds + 1):  # round 0 warms PREFECT_HOME (its database) and the file cache
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                got = _cli(work / f"{name}-{r}", server.base_url, prompts_path, VARIANTS[name], work / "prefect-home")
                times = arrivals.take(got["began"])
                if len(times) != count * 4:
                    raise RuntimeError(f"{name} round {r}: {len(times)} calls at the server, expected {count * 4}")
                row = {"first": times[0] - got["began"], "last": times[-1] - got["began"], "wall": got["seconds"]}
                print(f"   round {r}{' (warm-up)' if r == 0 else ''} {name}: first call {row['first']:.2f} s, "
                      f"last {row['last']:.2f} s, wall {row['wall']:.2f} s", flush=True)  # fmt: skip
                if r:
                    samples[name].append(row)
    load = f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    med = {name: {k: statistics.median(s[k] for s in rows) for k in ("first", "last", "wall")}
           for name, rows in samples.items()}  # fmt: skip
    setting = f"{count:,} prompts, MoA 3+1, {rounds} rounds, medians; {load}"
    return [
        figure(NAME, "first model call after the command, early start", med["early"]["first"], "s",
               med["late"]["first"], "without", goal="< 1", note=f"{setting}"),
        figure(NAME, "last model call after the command, early start", med["early"]["last"], "s",
               med["late"]["last"], "without"),
        figure(NAME, "whole process wall time, early start", med["early"]["wall"], "s", med["late"]["wall"], "without"),
    ]  # fmt: skip


def _cli(folder: Path, base_url: str, prompts_path: Path, early: str, prefect_home: Path) -> dict[str, Any]:
    config = write_config(folder / "config.yaml", moa_raw(folder, base_url, prompts_path, cache=False,
                                                          name=f"bench-startup-{folder.name}"))  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        "PREFECT_HOME": str(prefect_home), "MOAA_EARLY_START": early}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    got = run_sampled([sys.executable, "-m", "moaa.cli", "run", str(config)], ROOT, env, folder / "run.log", 1800)
    if got.pop("code") != 0:
        tail = (folder / "run.log").read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"moaa run failed; log {folder}/run.log:\n" + "\n".join(tail))
    return got
