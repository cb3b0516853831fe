"""Run moaa's benchmarks. Usage: python -m benchmarks [--quick] [--only engine,scale,...] [--prompts N] [--big]
    [--curator-python /path/to/venv/bin/python] [--distilabel-python /path/to/venv/bin/python]
    [--base-url URL --model NAME] [--config configs/local.yaml]

Benchmarks (run in this order): throughput, startup, engine, scale, resume, variants, local, view, verified,
rationale, data. `--quick` shrinks every one (the scale run stops at 5,000 prompts instead of 100,000, view at
10,000 rows, data at 2 prompts); throughput is short by default (3 rounds, 400 prompts) and `--big` runs it at 7
rounds of 2,000 prompts. Prints a table with each figure, its ceiling or target and the ratio, and writes
everything to bench_results/bench-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, Figure

BENCHES = ("throughput", "startup", "engine", "scale", "resume", "variants", "local", "view", "verified", "rationale",
           "data")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these (repeatable or comma-separated): {', '.join(BENCHES)}")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small sizes: minutes instead of the full run")
    p.add_argument("--prompts", type=int, default=None,
                   help="scale: the largest prompt count (default 100000); throughput: prompts a CLI run; "
                   "view: the big version's SFT rows (default 100000); verified, rationale: the first N "
                   "prompts; data: the preset's prompts.limit")  # fmt: skip
    p.add_argument("--rounds", type=int, default=None, metavar="N",
                   help="throughput: interleaved rounds (default 3); 0: only the CLI run on a new PREFECT_HOME, "
                   "e.g. its tree's peak RSS at --prompts 100000")  # fmt: skip
    p.add_argument("--big", action="store_true", help="throughput: 7 rounds of 2,000 prompts (default 3 of 400)")
    p.add_argument("--curator-python", default=os.environ.get("MOAA_BENCH_CURATOR_PYTHON"), metavar="PYTHON",
                   help="throughput: the interpreter of a venv with bespokelabs-curator, for its reference row "
                   "(default $MOAA_BENCH_CURATOR_PYTHON; without it a curator-style row stands in)")  # fmt: skip
    p.add_argument("--distilabel-python", default=os.environ.get("MOAA_BENCH_DISTILABEL_PYTHON"), metavar="PYTHON",
                   help="throughput: the interpreter of a venv with distilabel[openai], for its reference row "
                   "(default $MOAA_BENCH_DISTILABEL_PYTHON)")  # fmt: skip
    p.add_argument("--latency-ms", type=float, default=50, help="the test server's fixed latency")
    p.add_argument("--config", default=None, help="verified, rationale, data: the config whose models and MoA "
                   "(verified), policy and judge (rationale) or whole run (data) are measured (default "
                   "configs/local.yaml)")  # fmt: skip
    p.add_argument("--base-url", default=None, help="verified, rationale: an OpenAI-compatible server to "
                   "measure instead of the config's endpoints (the embedded model)")  # fmt: skip
    p.add_argument("--model", default=None, help="verified, rationale: the model name to ask --base-url for")
    p.add_argument("--out", default=str(ROOT / "bench_results"), help="folder for the JSON results")
    p.add_argument("--keep", action="store_true", help="keep the work folder (data, logs) after the run")
    args = p.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    args.names = [n for n in BENCHES if n in names]
    return args


def format_table(figures: list[Figure]) -> str:
    head = ("bench", "figure", "value", "vs", "ratio", "goal", "ok")
    rows = [head]
    for f in figures:
        ref = f"{f.reference_kind} {_num(f.reference)}" if f.reference is not None else ""
        ratio = f"{f.ratio:.3f}" if f.ratio is not None else ""
        ok = "" if f.ok is None else ("yes" if f.ok else "NO")
        rows.append((f.bench, f.name, f"{_num(f.value)} {f.unit}", ref, ratio, f.goal, ok))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  [{f.bench}] {f.name}: {f.note}" for f in figures if f.note]
    return "\n".join(lines + (["", "notes:"] + notes if notes else []))


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix=f"moaa-bench-{stamp}-"))
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    print(f"moaa benchmarks: {', '.join(args.names)}{' (quick)' if args.quick else ''}; work folder {work}", flush=True)
    try:
        for name in args.names:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            print(f"== {name}: {module.__doc__.splitlines()[0]}", flush=True)
            start = time.perf_counter()
            try:
                got = module.run(work / name, quick=args.quick, latency_ms=args.latency_ms, prompts=args.prompts,
                                 big=args.big, rounds=args.rounds, curator_python=args.curator_python,
                                 distilabel_python=args.distilabel_python, base_url=args.base_url,
                                 model=args.model, config=args.config)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"   {name} FAILED: {errors[name]}", flush=True)
                got = []
            timings[name] = time.perf_counter() - start
            for fig in got:
                ratio = f" (ratio {fig.ratio:.3f})" if fig.ratio is not None else ""
                print(f"   {fig.name}: {_num(fig.value)} {fig.unit}{ratio}")
            figures += got
            print(f"   ({timings[name]:.0f}s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(format_table(figures))
    print("\ntime per benchmark: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{stamp}.json"
    machine = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    result = {"started": stamp, "quick": args.quick, "benchmarks": args.names, "machine": machine,
              "seconds": timings, "errors": errors, "figures": [f.to_dict() for f in figures]}  # fmt: skip
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
