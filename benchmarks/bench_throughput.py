"""Throughput: calls/s of moaa's client (SDK vs aiohttp transport), the whole `moaa run` CLI, reference loops.

One fixed-latency test server (a subprocess, 50 ms, logging every arrival); every row sends the same
chat request with the same number in flight (64), and rounds interleave the rows (their order
rotating) so that load from elsewhere hits them alike. Calls are counted at the server, and a
rate is calls over the span of their arrival times. Rows:

- `lean`: a lean aiohttp loop, nothing around it (the reference for one Python process);
- `create`: the bare SDK `chat.completions.create` loop (what a user writes);
- `client-sdk`: moaa's `OpenAIChatClient` over its old transport, the SDK's `post` on httpx
  (benchmarks/sdk_transport.py); `client`: the same client over moaa.models.transport (aiohttp);
- `cli`: the whole `moaa run` process on a 3-proposer + aggregator MoA over N prompts, start-up
  (imports, Prefect's ephemeral API server) included; its peak RSS is the whole process tree's.
  Then the same command again, on the finished config: the re-run's whole-process time against the
  cold run's (target < 5%); `cli-nocache`: the cold run with the request cache off;
- `curator`, `distilabel` (or `curator-style` without curator): the same MoA in those libraries,
  each a whole process in its own venv (benchmarks/throughput_refs.py); the cli row over each.

Every row must send exactly 4 calls per prompt (as counted at the server), else it fails.

Ratios are the medians of per-round pairs (a row's rate over `lean`'s in the same round).
Default: 3 rounds, 1,000 prompts (about 6 minutes with both reference libraries): 10 shards of
100, more than run at once, so the span measured holds the hand-over from the shards begun
while Prefect's API starts to the flow's tasks (at 400 prompts every shard was begun early and
a 15 s stall after them went unseen); `--big`: 7 rounds, 2,000 prompts.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MIB,
    ROOT,
    TestServer,
    figure,
    moa_raw,
    run_in_child,
    run_sampled,
    write_config,
    write_prompts,
)
from benchmarks.throughput_refs import check_count, interpreter, reference_figures, reference_rows, run_reference

NAME = "throughput"
ROWS = ("lean", "create", "client-sdk", "client", "cli", "cli-nocache")
LABELS = {
    "lean": "lean aiohttp loop",
    "create": "bare SDK chat.completions.create loop",
    "client-sdk": "moaa OpenAIChatClient, old transport (SDK post on httpx)",
    "client": "moaa OpenAIChatClient, new transport (aiohttp)",
    "cli": "whole `moaa run` CLI, MoA 3+1, cache on",
    "cli-nocache": "whole `moaa run` CLI, MoA 3+1, cache off",
}


def _body(i: int) -> dict[str, Any]:
    return {
        "model": "test-model", "max_tokens": 256, "temperature": 0.7, "seed": i,
        "messages": [{"role": "user", "content": f"Explain tides to a curious student (question {i})."}],
    }  # fmt: skip


async def _sender(kind: str, base_url: str, concurrency: int) -> tuple[Any, Any]:
    """(send(i) -> answer text, close()) for one in-process row."""
    if kind == "lean":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        url = base_url + "/chat/completions"

        async def send(i: int) -> str:
            async with session.post(url, json=_body(i), headers={"Authorization": "Bearer bench"}) as resp:
                return json.loads(await resp.read())["choices"][0]["message"]["content"]

        return send, session.close
    if kind == "create":
        from openai import AsyncOpenAI

        sdk = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60)

        async def send(i: int) -> str:
            return (await sdk.chat.completions.create(**_body(i))).choices[0].message.content or ""

        return send, sdk.close
    from benchmarks.sdk_transport import SDKChatClient
    from moaa.config import EndpointConfig, Sampling
    from moaa.models.client import OpenAIChatClient
    from moaa.models.stats import RunStats

    endpoint = EndpointConfig(model="test-model", base_url=base_url, max_concurrency=concurrency, max_retries=3,
                              backoff_s=0.05, timeout_s=60, sampling=Sampling(max_tokens=256))  # fmt: skip
    cls = SDKChatClient if kind == "client-sdk" else OpenAIChatClient
    client = cls(f"bench-{kind}", endpoint, RunStats(), api_key="bench")

    async def send(i: int) -> str:
        body = _body(i)
        return (await client.chat(body["messages"], Sampling(temperature=0.7, seed=i), tag="bench")).text

    return send, client.aclose


def loop_rate(base_url: str, kind: str, calls: int, concurrency: int) -> dict[str, Any]:
    """Child: `calls` chat calls from `concurrency` workers of one row after a warm-up; when it began."""

    async def go() -> dict[str, Any]:
        send, close = await _sender(kind, base_url, concurrency)
        warm = iter(range(-concurrency, 0))
        todo = iter(range(calls))

        async def worker(items: Any) -> None:
            for i in items:
                assert await send(i)

        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))  # connections, imports
        began, cpu = time.time(), time.process_time()
        await asyncio.gather(*(worker(todo) for _ in range(concurrency)))
        out = {"began": began, "seconds": time.time() - began, "cpu_s": time.process_time() - cpu, "calls": calls}
        await close()
        return out

    return asyncio.run(go())


def run_cli(config: Path, log_path: Path, prefect_home: Path, timeout_s: float = 1800) -> dict[str, Any]:
    """`moaa run CONFIG` as a user starts it (its own Prefect ephemeral API); wall time, tree peak RSS."""
    env = os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        "PREFECT_HOME": str(prefect_home)}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "moaa.cli", "run", str(config)]
    got = run_sampled(cmd, ROOT, env, log_path, timeout_s)
    if (code := got.pop("code")) != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"moaa run failed (exit {code}); log {log_path}:\n" + "\n".join(tail))
    return got


class Arrivals:
    """Chat-request arrival times read from the test server's log, a slice per measurement.

    A request with no messages (curator's rate-limit probe) is no call of the workload: it is left
    out of the times and counted in `probes` of the last take.
    """

    def __init__(self, path: Path):
        self.path, self._offset, self.probes = path, 0, 0

    def take(self, since: float) -> list[float]:
        """Arrivals logged since the last take, from time `since` on."""
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        times, self.probes = [], 0
        for line in chunk[:end].splitlines():
            record = json.loads(line)
            if record["path"].endswith("/chat/completions") and record["t"] >= since:
                if (record.get("body") or {}).get("messages"):
                    times.append(record["t"])
                else:
                    self.probes += 1
        return sorted(times)


def run(work: Path, quick: bool, latency_ms: float = 50, prompts: int | None = None, big: bool = False,
        rounds: int | None = None, curator_python: str | None = None, distilabel_python: str | None = None,
        **_: Any) -> list:  # fmt: skip
    """Every row once per round, rounds interleaved; figures from the medians of paired ratios.
    `rounds=0`: only the first CLI run, on a new PREFECT_HOME (its rate, first call, tree peak)."""
    pythons = {"curator": interpreter("curator", curator_python),
               "distilabel": interpreter("distilabel", distilabel_python)}  # fmt: skip
    refs = reference_rows(pythons)
    rows = ROWS + tuple(refs)
    rounds = (7 if big else (2 if quick else 3)) if rounds is None else rounds
    prompts = prompts or (2000 if big else (200 if quick else 1000))
    calls, concurrency = prompts * 4, 64  # the in-process rows send as many calls as the CLI's MoA
    work.mkdir(parents=True, exist_ok=True)
    prompts_path = write_prompts(work / f"prompts-{prompts}.jsonl", prompts)
    samples: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
    load_before = os.getloadavg()
    with TestServer(latency_ms, 0, work / "server.jsonl") as server:
        arrivals = Arrivals(work / "server.jsonl")
        # The first run on a PREFECT_HOME creates Prefect's database (~150 migrations, ~8 s of CPU in a
        # child during the calls): once per machine for a user, and in the rounds it would fall on
        # whichever CLI row came first. It runs here, reported apart, not in the pairs.
        fresh = _measure("cli", "fresh", work, server.base_url, prompts_path, calls, concurrency, pythons)
        times = arrivals.take(fresh["began"])
        check_count("cli (fresh Prefect database)", len(times), prompts)
        fresh |= {"rate": (len(times) - 1) / (times[-1] - times[0]), "first_call_s": times[0] - fresh["began"]}
        print(f"   fresh Prefect database, cli: {fresh['rate']:,.0f} calls/s", flush=True)
        for r in range(rounds):
            for row in rows[r % len(rows) :] + rows[: r % len(rows)]:
                got = _measure(row, r, work, server.base_url, prompts_path, calls, concurrency, pythons)
                times = arrivals.take(got["began"])
                check_count(f"{row} (round {r + 1})", len(times), prompts)
                got |= {
                    "count": len(times),
                    "rate": (len(times) - 1) / (times[-1] - times[0]),
                    "probes": arrivals.probes,
                }
                got["first_call_s"] = times[0] - got["began"]
                samples[row].append(got)
                print(f"   round {r + 1}/{rounds} {row}: {got['rate']:,.0f} calls/s", flush=True)
    if not rounds:
        return [_fresh_figure(fresh, prompts)]
    load = (load_before, os.getloadavg())
    figures = _figures(samples, latency_ms, concurrency, prompts, load) + [_fresh_figure(fresh, prompts)]
    return figures + reference_figures(samples, refs, _paired, NAME)


def _fresh_figure(got: dict[str, Any], prompts: int) -> Any:
    return figure(NAME, f"CLI: peak RSS of the process tree, first run on a new PREFECT_HOME, {prompts:,} prompts",
                  got["tree_peak_rss_bytes"] / MIB, "MiB", goal="< 400",
                  note=f"{got['rate']:,.0f} calls/s, first call {got['first_call_s']:.1f} s, wall "
                  f"{got['seconds']:.1f} s; a child creates Prefect's database while the first calls run")  # fmt: skip


def _measure(row: str, r: int | str, work: Path, base_url: str, prompts_path: Path, calls: int,
             concurrency: int, pythons: dict[str, str | None]) -> dict[str, Any]:  # fmt: skip
    if row in ("curator", "distilabel"):
        return run_reference(row, pythons[row] or "", base_url, prompts_path, work / f"{row}-{r}", concurrency)
    if row == "curator-style":  # a whole process too, as the libraries' rows are: the child's own start
        began = time.time()
        kwargs = {"base_url": base_url, "prompts_path": str(prompts_path), "concurrency": concurrency}
        got = run_in_child("benchmarks.throughput_refs:curator_style", kwargs, work / f"{row}-{r}.log")
        return got | {"began": began, "seconds": time.time() - began}
    if row in ("cli", "cli-nocache"):
        folder, cache = work / f"{row}-{r}", row == "cli"
        raw = moa_raw(folder, base_url, prompts_path, concurrency=concurrency, cache=cache, name=f"bench-{row}-{r}")
        config = write_config(folder / "config.yaml", raw)
        got = run_cli(config, work / f"{row}-{r}.log", work / "prefect-home")
        if cache:  # the same command on the finished config: nothing to do, no Prefect
            again = run_cli(config, work / f"{row}-{r}-rerun.log", work / "prefect-home")
            if "up to date: " not in (work / f"{row}-{r}-rerun.log").read_text():
                raise RuntimeError(f"the re-run of {config} ran the flow; see {work}/{row}-{r}-rerun.log")
            got["rerun_s"] = again["seconds"]
        return got
    kwargs = {"base_url": base_url, "kind": row, "calls": calls, "concurrency": concurrency}
    return run_in_child("benchmarks.bench_throughput:loop_rate", kwargs, work / f"{row}-{r}.log")


def _paired(samples: dict[str, list[dict[str, Any]]], row: str, ref: str) -> float:
    return statistics.median(a["rate"] / b["rate"] for a, b in zip(samples[row], samples[ref], strict=True))


def _figures(samples: dict[str, list[dict[str, Any]]], latency_ms: float, concurrency: int, prompts: int,
             load: tuple) -> list:  # fmt: skip
    median = {row: statistics.median(s["rate"] for s in got) for row, got in samples.items()}
    rates = {row: [round(s["rate"]) for s in got] for row, got in samples.items()}
    ceiling = concurrency / (latency_ms / 1000)
    (b1, b5, _), (a1, a5, _) = load
    out = [figure(NAME, f"{LABELS['lean']}, {concurrency} in flight", median["lean"], "calls/s", ceiling, "ceiling",
                  note=f"rounds {rates['lean']}; ceiling = concurrency / latency; {_cpu(samples['lean'])}; "
                  f"load average 1/5 min {b1:.1f}/{b5:.1f} before, {a1:.1f}/{a5:.1f} after on {os.cpu_count()} "
                  "CPUs")]  # fmt: skip
    for row in ("create", "client-sdk", "client"):
        out.append(figure(NAME, LABELS[row], median[row], "calls/s", median["lean"], "lean loop",
                          note=f"paired ratio to the lean loop {_paired(samples, row, 'lean'):.2f}; rounds "
                          f"{rates[row]}; {_cpu(samples[row])}; peak RSS "
                          f"{max(s['maxrss_bytes'] for s in samples[row]) / MIB:,.0f} MiB"))  # fmt: skip
    out.append(figure(NAME, "client: new transport / old transport (paired)", _paired(samples, "client", "client-sdk"),
                      "x", goal=">= 1.5", note="the same OpenAIChatClient (limiter, retries, accounting) over "
                      "moaa.models.transport vs over the SDK's post on httpx"))  # fmt: skip
    return out + _cli_figures(samples, median, rates, prompts)


def _cli_figures(samples: dict[str, list[dict[str, Any]]], median: dict[str, float], rates: dict[str, list[int]],
                 prompts: int) -> list:  # fmt: skip
    """The whole-CLI rows: cache on and off, first call, tree RSS, the finished re-run."""
    out = []
    for row in ("cli", "cli-nocache"):
        got = samples[row]
        wall = statistics.median(s["count"] / s["seconds"] for s in got)
        out.append(figure(NAME, f"{LABELS[row]}, {prompts:,} prompts", median[row], "calls/s", median["lean"],
                          "lean loop", ">= 0.8",
                          note=f"paired ratio to the lean loop {_paired(samples, row, 'lean'):.2f}, to the client "
                          f"{_paired(samples, row, 'client'):.2f}; rounds {rates[row]}; over the whole process "
                          f"(start-up included) {wall:,.0f} calls/s, wall "
                          f"{statistics.median(s['seconds'] for s in got):,.1f} s"))  # fmt: skip
    out.append(figure(NAME, "CLI: cache on / cache off (paired)", _paired(samples, "cli", "cli-nocache"), "x",
                      goal=">= 0.95", note="the same cold run with and without the request cache"))  # fmt: skip
    cli = samples["cli"]
    cold, rerun = statistics.median(s["seconds"] for s in cli), statistics.median(s["rerun_s"] for s in cli)
    out.append(figure(NAME, "CLI: re-run of a finished config, whole process", rerun, "s", cold, "cold run",
                      "< 0.05", note=f"rounds {[round(s['rerun_s'], 2) for s in cli]} vs cold "
                      f"{[round(s['seconds'], 1) for s in cli]}; no request, no new version, no Prefect"))  # fmt: skip
    out.append(figure(NAME, "CLI: first model call after the command", statistics.median(
        s["first_call_s"] for s in cli), "s", goal="<= 3", note=f"rounds {[round(s['first_call_s'], 1) for s in cli]}; "
        "imports, config, planning and Prefect's ephemeral API start-up"))  # fmt: skip
    out.append(figure(NAME, f"CLI: peak RSS of the process tree, {prompts:,} prompts",
                      max(s["tree_peak_rss_bytes"] for s in cli) / MIB, "MiB", goal="< 400",
                      note="moaa and any child (Prefect's API server runs in moaa's process), sampled every 0.2 s, "
                      "Prefect's database made by an earlier run; target at 100,000 prompts"))  # fmt: skip
    return out


def _cpu(got: list[dict[str, Any]]) -> str:
    return f"CPU {statistics.median(s['cpu_s'] / s['calls'] for s in got) * 1000:.2f} ms/call in the client process"
