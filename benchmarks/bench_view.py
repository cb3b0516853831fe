"""View: `moaa view` on a 100,000-row version answers each page in well under a second; memory stays flat.

The rows come from the real pipeline against moaa's OpenAI test server: a 3-proposer + aggregator MoA
and a preference stage (3 policy samples per prompt, judged pairwise in both orders by a test-server
judge with a fixed preference) on `BASE` prompts. That version's rows are then repeated,
each copy's prompt ids and user texts made distinct ("[copy k]"), into two versions written by
moaa's own writer: 1,000 SFT rows and `--prompts` (default 100,000; `--quick` 10,000) SFT rows, with
their DPO pairs, trace (10 steps a prompt) and failures. Each version is then served by `moaa view`
as a user starts it (a subprocess on a free port) and asked, over HTTP from this process, for: the
version page (the first request of the process), a page in the middle of the SFT table, a text
search that matches one copy in every SFT message, its second page, a DPO score filter, a trace
filter by kind (every trace row's `kind`), an SFT row's page (its trace found among all trace rows)
and a DPO pair's page. Each request is timed three times with different values (another copy,
another row), so every one of them reads the parquet (the viewer caches a query's matches), and the
median is reported, with the 1,000-row version's time beside it. Memory: the viewer process's peak
RSS (VmHWM) after the whole sequence on each version; flat = the big version's peak over the small's.
Target: every request < 1 s at the big size; peak growth < 1.25x.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, PrefectServer, figure, moa_raw, run_in_child, write_config, write_prompts

NAME = "view"
BASE = 400
SMALL = 1_000


def run(work: Path, quick: bool, latency_ms: float = 50, prompts: int | None = None, **_: Any) -> list:
    rows = prompts or (10_000 if quick else 100_000)
    base = min(BASE, rows)
    with PrefectServer(work / "prefect") as prefect:
        made = run_in_child("benchmarks.bench_view:base_version", {"folder": str(work / "base"), "prompts": base},
                            work / "base.log", timeout_s=3600, env=prefect.env())  # fmt: skip
    root = work / "data"
    versions = {}
    for label, n in (("small", min(SMALL, rows)), ("big", rows)):
        got = run_in_child("benchmarks.bench_view:repeat_version", {"base": made["version"], "root": str(root),
                           "name": f"view-{n}", "rows": n}, work / f"repeat-{label}.log", timeout_s=3600)  # fmt: skip
        versions[label] = got
        print(f"   {got['name']}: {got['counts']} written in {got['seconds']:.0f}s", flush=True)
    measured = {label: measure(root, v, work / f"view-{label}.log") for label, v in versions.items()}
    return _figures(measured, versions)


# ---------------------------------------------------------------- children


def _judge_or_default(request: dict) -> str | None:
    """Pairwise verdicts that prefer the answer with the larger hash, in either order (with a rationale);
    every other call the test server's default reply."""
    import hashlib
    import re

    shown = re.findall(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", request["messages"][-1]["content"], re.DOTALL)
    if len(shown) != 2:
        return None
    (_, first), (_, second) = shown
    rank = [hashlib.sha256(text.encode()).hexdigest() for text in (first, second)]
    winner = "A" if rank[0] > rank[1] else "B" if rank[1] > rank[0] else "tie"
    return json.dumps({"rationale": f"Answer {winner} covers the question more fully.", "winner": winner})


def base_version(folder: str, prompts: int) -> dict[str, Any]:
    """Child: the pipeline (MoA SFT + pairwise-judged preference) on `prompts` prompts against the test server."""
    from flows.prefect_env import ensure_api, stop_api
    from moaa.testing.openai_server import OpenAITestServer

    work = Path(folder)
    ensure_api()
    from flows.pipeline_flow import moaa_pipeline

    try:
        with OpenAITestServer(responder=_judge_or_default, filler_words=40) as server:
            raw = moa_raw(work, server.base_url, write_prompts(work / "prompts.jsonl", prompts), name="view-base")
            raw["preference"] = {"enabled": True, "policy": {"endpoint": "bench", "temperature": 0.9}, "samples": 3,
                                 "scorer": {"kind": "pairwise", "judges": [{"endpoint": "bench"}]}}  # fmt: skip
            summary = moaa_pipeline(str(write_config(work / "config.yaml", raw)), [])
    finally:
        stop_api()
    return {"version": summary["version_path"]}


def repeat_version(base: str, root: str, name: str, rows: int) -> dict[str, Any]:
    """Child: the base version's rows repeated (ids and user texts made distinct per copy) into a version
    of `rows` SFT rows, with those prompts' pairs, trace and failures."""
    import pyarrow.parquet as pq

    from moaa.dataset.manifest import read_manifest
    from moaa.dataset.versions import write_version

    started = time.perf_counter()
    source, out = Path(base), Path(root) / f".parts-{name}"
    by_config = {c: [r for f in sorted((source / "data" / c).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
                 for c in ("sft", "dpo", "trace", "failures")}  # fmt: skip
    ids = [r["prompt_id"] for r in by_config["sft"]]
    copies = -(-rows // len(ids))
    parts: dict[str, list[Path]] = {}
    for config, found in by_config.items():
        stages = ("sft", "preference") if config == "trace" else ("all",)
        for stage in stages:  # a trace part holds one block of steps per prompt and stage, as shards do
            path = out / config / stage / "part" / f"{config}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            mine = [r for r in found if stage == "all" or (r["stage"] == "sft") == (stage == "sft")]
            with path.open("w") as fh:
                for k in range(copies):
                    keep = set(ids[: rows - k * len(ids)]) if (k + 1) * len(ids) > rows else None
                    for row in mine:
                        if keep is None or row["prompt_id"] in keep:
                            fh.write(json.dumps(_copy(row, k)) + "\n")
            parts.setdefault(config, []).append(path)
    manifest = read_manifest(source)
    info = write_version(Path(root), name, parts, config=manifest["config"], license="apache-2.0", tags=["bench"],
                         run_info={"stats": manifest.get("stats"), "methods": manifest.get("methods")},
                         test_size=manifest["split"]["test_size"], split_seed=manifest["split"]["seed"])  # fmt: skip
    counts = {c: sum(s.values()) for c, s in read_manifest(info.path)["counts"]["rows"].items()}
    return {"name": name, "path": str(info.path), "counts": counts, "seconds": time.perf_counter() - started,
            "copies": copies}  # fmt: skip


def _copy(row: dict[str, Any], k: int) -> dict[str, Any]:
    row = dict(row, prompt_id=f"{row['prompt_id']}-{k}")
    for column in ("messages", "prompt"):
        if row.get(column):
            row[column] = [dict(m, content=f"{m['content']} [copy {k}]") if m["role"] == "user" else m
                           for m in row[column]]  # fmt: skip
    return row


# ---------------------------------------------------------------- the viewer, measured


def _requests(version: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(what, three paths) asked of the viewer, each with different values."""
    from moaa.view.paging import Query, config_table, read_page

    path = Path(version["path"])
    base = f"/d/{path.parent.name}/{path.name}/"
    n = version["counts"]["sft"]
    middle = max(1, n // 50 // 2)
    sft, dpo = config_table(path, "sft"), config_table(path, "dpo")
    picks = [0, sft.rows // 2, sft.rows - 1]
    sft_ids = [read_page(sft, Query(), p, 1).rows[0]["prompt_id"] for p in picks]
    dpo_ids = [read_page(dpo, Query(), p, 1).rows[0]["prompt_id"] for p in (0, dpo.rows // 2, dpo.rows - 1)]
    copies = [0, max(0, version["copies"] // 2), version["copies"] - 1]
    return [
        ("open the version", [base] * 1),
        ("a page in the middle of sft", [f"{base}sft?page={middle + i}" for i in range(3)]),
        ("text search, every sft message", [f"{base}sft?q=%5Bcopy+{k}%5D" for k in copies]),
        ("its second page", [f"{base}sft?q=%5Bcopy+{k}%5D&page=2" for k in copies]),
        ("dpo score filter", [f"{base}dpo?score_min={s}" for s in ("0.5", "0.6", "0.7")]),
        ("trace filter by kind", [f"{base}trace?kind={k}" for k in ("verdict", "aggregate", "sample")]),
        ("an sft row (its trace found)", [f"{base}sft/{pid}" for pid in sft_ids]),
        ("a dpo pair (its trace found)", [f"{base}dpo/{pid}" for pid in dpo_ids]),
    ]


def measure(root: Path, version: dict[str, Any], log: Path) -> dict[str, Any]:
    """The requests' median seconds against `moaa view` in a subprocess, and that process's peak RSS."""
    import httpx

    cmd = [sys.executable, "-m", "moaa.cli", "view", "--root", str(root), "--port", "0"]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            line = proc.stdout.readline()
            if not line.startswith("moaa view: "):
                raise RuntimeError(f"moaa view did not start: {line!r}; see {log}")
            url = line.split()[2].rstrip("/")
            start_rss = _rss(proc.pid)["VmRSS"]
            times: dict[str, float] = {}
            with httpx.Client(timeout=120) as client:
                for what, paths in _requests(version):
                    took = []
                    for path in paths:
                        began = time.perf_counter()
                        answer = client.get(url + path)
                        took.append(time.perf_counter() - began)
                        if answer.status_code != 200:
                            raise RuntimeError(f"{path}: HTTP {answer.status_code}")
                    times[what] = statistics.median(took)
            memory = _rss(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"times": times, "peak_rss": memory["VmHWM"], "rss_after": memory["VmRSS"], "rss_start": start_rss}


def _rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _figures(measured: dict[str, dict[str, Any]], versions: dict[str, dict[str, Any]]) -> list:
    small, big = measured["small"], measured["big"]
    n_small, n_big = versions["small"]["counts"], versions["big"]["counts"]
    figures = []
    for what, seconds in big["times"].items():
        figures.append(figure(
            NAME, f"{what}, {n_big['sft']:,} sft rows", seconds * 1000, "ms", None, "", "< 1000",
            note=f"{small['times'][what] * 1000:,.0f} ms at {n_small['sft']:,} rows",
        ))  # fmt: skip
    figures.append(figure(
        NAME, f"viewer peak RSS, {n_big['sft']:,} vs {n_small['sft']:,} sft rows", big["peak_rss"] / MIB, "MiB",
        small["peak_rss"] / MIB, "baseline", "< 1.25",
        note=f"the big version: {n_big.get('dpo', 0):,} dpo, {n_big.get('trace', 0):,} trace rows; RSS at start "
        f"{big['rss_start'] / MIB:,.0f} MiB; the whole `moaa view` process (VmHWM)",
    ))  # fmt: skip
    return figures
