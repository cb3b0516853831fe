"""Reference rows of the throughput benchmark: other libraries on the `cli` row's MoA workload.

The same 3-proposer + aggregator MoA over the same prompts, against the same test server, 64 in
flight, each run as a whole process (start-up included) whose process tree's peak RSS is sampled:

- `curator`: bespokelabs curator (benchmarks/ref_curator.py) in its own interpreter;
- `distilabel`: distilabel's MixtureOfAgentsLLM pipeline (benchmarks/ref_distilabel.py), likewise;
- `curator-style`: when curator is not given, its pattern in moaa's venv: one aiohttp session,
  every proposer call of the pass as a task behind a semaphore, then a second pass for the
  aggregators (`curator_style`, below).

The libraries cannot live in moaa's venv, so each is run by the interpreter named by
`--curator-python` / `--distilabel-python` (or MOAA_BENCH_CURATOR_PYTHON /
MOAA_BENCH_DISTILABEL_PYTHON); a row without one is skipped with a line saying how to enable it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, ROOT, figure, run_sampled

REFS = {  # row: (option, environment variable, script)
    "curator": ("--curator-python", "MOAA_BENCH_CURATOR_PYTHON", "ref_curator.py"),
    "distilabel": ("--distilabel-python", "MOAA_BENCH_DISTILABEL_PYTHON", "ref_distilabel.py"),
}
LABELS = {
    "curator": "bespokelabs curator, MoA 3+1 (two LLM passes)",
    "distilabel": "distilabel MixtureOfAgentsLLM pipeline, MoA 3+1",
    "curator-style": "curator-style single calls, MoA 3+1 (two passes, aiohttp)",
}
TARGETS = {"curator": ">= 1.5", "distilabel": ">= 4", "curator-style": ""}  # the cli row over each (issue 19)
CALLS_PER_PROMPT = 4  # 3 proposers + 1 aggregator


def interpreter(row: str, given: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The Python that runs `row`'s library: the option's value, else its environment variable."""
    value = given or (os.environ if environ is None else environ).get(REFS[row][1]) or None
    if value and not Path(value).is_file():
        raise FileNotFoundError(f"{REFS[row][0]} {value}: no such interpreter")
    return value


def reference_rows(pythons: dict[str, str | None]) -> list[str]:
    """The reference rows to measure; prints one line for each library left out."""
    rows = []
    for row, (option, var, _) in REFS.items():
        if pythons.get(row):
            rows.append(row)
        else:
            print(f"   skipping the {row} row: give {option} PATH/bin/python (or {var}) of a venv with it", flush=True)
    if not pythons.get("curator"):
        rows.append("curator-style")
    return rows


def check_count(row: str, count: int, prompts: int) -> None:
    """A row must have sent exactly 4 calls per prompt, counted at the server."""
    if count != prompts * CALLS_PER_PROMPT:
        raise RuntimeError(f"the {row} row sent {count:,} chat calls for {prompts:,} prompts, not "
                           f"{prompts * CALLS_PER_PROMPT:,} ({CALLS_PER_PROMPT} per prompt): it retried, "
                           "cached or dropped calls; its rate would not compare")  # fmt: skip


def run_reference(row: str, python: str, base_url: str, prompts_path: Path, work: Path, concurrency: int,
                  timeout_s: float = 1800) -> dict[str, Any]:  # fmt: skip
    """`python benchmarks/<script> ...` as one whole process; wall time and the tree's peak RSS."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(ROOT / "benchmarks" / REFS[row][2]), base_url, str(prompts_path), str(work), str(concurrency)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    log_path = work.with_suffix(".log")
    got = run_sampled(cmd, work, env, log_path, timeout_s)
    code = got.pop("code")
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    if code != 0 or not lines:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"the {row} row failed (exit {code}); log {log_path}:\n" + "\n".join(tail))
    return json.loads(lines[-1][len("RESULT ") :]) | got


def curator_style(base_url: str, prompts_path: str, concurrency: int) -> dict[str, Any]:
    """Child: curator's request pattern on the MoA without curator (proposer pass, aggregator pass)."""
    import aiohttp

    from moaa.prompts.generation import aggregator_messages

    with open(prompts_path) as fh:
        prompts = [json.loads(line)["prompt"] for line in fh]

    async def go() -> int:
        gate = asyncio.Semaphore(concurrency)
        url, headers = base_url + "/chat/completions", {"Authorization": "Bearer bench"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10 * concurrency)) as session:

            async def call(messages: list[dict[str, str]], temperature: float) -> str:
                body = {"model": "test-model", "messages": messages, "max_tokens": 256, "temperature": temperature}
                async with gate, session.post(url, json=body, headers=headers) as resp:
                    return (await resp.json())["choices"][0]["message"]["content"]

            asks = [[{"role": "user", "content": p}] for p in prompts]
            proposed = await asyncio.gather(*(call(m, t) for m in asks for t in (0.3, 0.7, 1.0)))
            finals = await asyncio.gather(*(call(aggregator_messages(m, list(proposed[3 * i : 3 * i + 3])), 0.2)
                                            for i, m in enumerate(asks)))  # fmt: skip
            return len(finals)

    return {"rows": asyncio.run(go())}


def reference_figures(samples: dict[str, list[dict[str, Any]]], rows: list[str], paired: Any,
                      bench: str) -> list:  # fmt: skip
    """Per reference row: its rate (vs the lean loop), the cli row over it (paired) and its tree RSS."""
    out = []
    for row in rows:
        got = samples[row]
        median = statistics.median(s["rate"] for s in got)
        rss = max(s["tree_peak_rss_bytes"] for s in got) / MIB
        wall = statistics.median(s["seconds"] for s in got)
        out.append(figure(bench, LABELS[row], median, "calls/s", statistics.median(s["rate"] for s in samples["lean"]),
                          "lean loop", note=f"rounds {[round(s['rate']) for s in got]}; whole process, wall "
                          f"{wall:,.1f} s; peak RSS of the process tree {rss:,.0f} MiB; "
                          f"{got[0]['probes']} probe call(s) with no messages left out of the count"))  # fmt: skip
        out.append(figure(bench, f"CLI / {row} (paired)", paired(samples, "cli", row), "x", goal=TARGETS[row],
                          note=f"the whole `moaa run` CLI (cache on) over {LABELS[row]}, same rounds"))  # fmt: skip
    return out
