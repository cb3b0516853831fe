"""`make data` side by side: the same preset run whole on moaa's runtime and on the runtime it replaced.

Each arm runs `moaa run` on the preset (configs/local.yaml unless --config names another) as `make data`
does, in a process of its own, with its own output, work folder and cache, so no arm reuses another's
answers:
- `xllamacpp`: the preset as it is: moaa starts the embedded model on llama.cpp's server (the prebuilt
  wheel, 4 parallel slots) and stops it; its start-up is part of the run;
- `llama-server (native)`: the same with `MOAA_LLAMA_SERVER` naming `make native-server`'s build, when built;
- `llama-cpp-python 0.3.36`: the runtime moaa used before (its Python server: one request at a time,
  log-probabilities computed in Python), when `make old-runtime` has built its wheel; the bench starts
  it and the preset's local endpoint points at it (the same model, roles, sampling, checks and judge),
  and its start-up is added to the arm's time, as moaa's own start-up is part of the others'.

Printed per arm: whole-process seconds, calls, tokens, tokens/s, SFT rows and failures, pairs, truncated
answers and unparsed verdicts, so that the rows each arm wrote can be compared as well as the time.
The figures: each runtime's whole-run time against the old runtime's on the same preset (the runtime
issue's goal: about a third), and its tokens written per second over the run against the old one's. The
second is the first's companion: answers are sampled, so two arms' runs write somewhat different tokens
(and re-ask different prompts). Arms run one after another, so the machine must stay otherwise idle:
compare arms of one run, not across runs. `--prompts N` runs the preset on N prompts (prompts.limit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import ROOT, Figure, figure, run_sampled

if TYPE_CHECKING:
    from moaa.config import MoaaConfig

NAME = "data"
OLD = "old"


@dataclass(frozen=True)
class Arm:
    """One runtime to run the preset on: `base_url` (a server already up) or None (the embedded model)."""

    key: str
    label: str
    base_url: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    startup_s: float = 0.0  # seconds its server took to start, outside `moaa run`


def arm_overrides(config: MoaaConfig, folder: Path, base_url: str | None, prompts: int | None) -> list[str]:
    """`moaa run --set` overrides for one arm: its own output, work folder and cache; `prompts` as the
    prompt (and preference) limit; every local endpoint pointed at `base_url` when given, keeping what
    moaa gives the embedded server (llama.cpp's schema shape, n seeded requests, its slots). All else
    (models, roles, sampling, checks, judge) is the config's own."""
    sets = [f"output.root={folder / 'data'}", f"run.work_dir={folder / 'work'}",
            f"cache.path={folder / 'cache.sqlite'}"]  # fmt: skip
    if prompts is not None:
        sets.append(f"prompts.limit={prompts}")
        if config.preference.limit is not None:
            sets.append(f"preference.limit={prompts}")
    if base_url is not None:
        from moaa.local.model import LOCAL_MODEL_NAME

        for name, ep in config.endpoints.items():
            if ep.local:
                sets += [f"endpoints.{name}.{key}={value}" for key, value in (
                    ("local", "false"), ("base_url", base_url), ("model", LOCAL_MODEL_NAME),
                    ("json_schema_style", ep.json_schema_style), ("supports_n", str(ep.supports_n).lower()),
                    ("max_concurrency", ep.max_concurrency))]  # fmt: skip
    return sets


def run_arm(arm: Arm, config_path: Path, folder: Path, prompts: int | None, timeout_s: float) -> dict[str, Any]:
    """`moaa run` on the arm's preset in a process of its own: whole-process seconds and its summary."""
    from moaa.config import load_config

    folder.mkdir(parents=True, exist_ok=True)
    sets = arm_overrides(load_config(config_path), folder, arm.base_url, prompts)
    cmd = [sys.executable, "-m", "moaa.cli", "run", str(config_path), *(f"--set={item}" for item in sets)]
    log = folder / "run.log"
    got = run_sampled(cmd, ROOT, os.environ | dict(arm.env), log, timeout_s)  # `moaa run`, as `make data` runs it
    code, seconds = got["code"], got["seconds"] + arm.startup_s
    summaries = sorted((folder / "work").glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime)
    if code != 0 and not summaries:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-8:])
        raise RuntimeError(f"{arm.label}: moaa run exited {code}; log {log}:\n{tail}")
    summary = json.loads(summaries[-1].read_text()) if summaries else {}
    return {"seconds": seconds, "exit": code, "log": str(log), **digest(summary)}


def digest(summary: dict[str, Any]) -> dict[str, Any]:
    """What a reader compares between arms: time in moaa, calls, tokens, rows, failures, quality."""
    stages = summary.get("stages", {})
    sft, pref = stages.get("sft", {}), stages.get("preference", {})
    counters = sft.get("counters", {}) | {f"preference_{k}": v for k, v in pref.get("counters", {}).items()}
    return {
        "moaa_seconds": summary.get("seconds"),
        "calls": summary.get("calls", 0),
        "prompt_tokens": summary.get("prompt_tokens", 0),
        "completion_tokens": summary.get("completion_tokens", 0),
        "sft_rows": sft.get("rows", 0),
        "sft_failed": sft.get("failed", 0),
        "pairs": pref.get("rows", 0),
        "truncated": counters.get("truncated", 0) + counters.get("preference_truncated", 0),
        "unparsed": counters.get("preference_unparsed", 0),
        "verified": counters.get("verify_pass", 0),
        "failures": summary.get("failures", {}),
        "version": summary.get("version_path"),
    }


def measure(work: Path, config_path: Path, arms: list[Arm], prompts: int | None = None,
            timeout_s: float = 3 * 3600) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Run the preset on each arm in turn; {arm key: its result}."""
    results: dict[str, dict[str, Any]] = {}
    for arm in arms:
        print(f"   {arm.label}: running the preset ...", flush=True)
        try:
            got = run_arm(arm, config_path, work / arm.key, prompts, timeout_s)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # one broken runtime must not hide the others
            results[arm.key] = {"error": " ".join(str(exc).split())}
            print(f"   {arm.label}: FAILED: {exc}", flush=True)
            continue
        results[arm.key] = got
        print(f"   {arm.label}: {line(got)}", flush=True)
    return results


def rate(got: dict[str, Any]) -> float:
    """Tokens written per second over the whole run: the arms' answers differ (sampling), so each arm's
    work differs a little; this is the time figure's companion per unit of work."""
    return got["completion_tokens"] / got["seconds"] if got["seconds"] else 0.0


def line(got: dict[str, Any]) -> str:
    failures = ", ".join(f"{k} {v}" for k, v in sorted(got["failures"].items())) or "none"
    return (f"{got['seconds']:.0f}s whole process, {got['calls']} calls, {got['prompt_tokens']:,} tokens in / "
            f"{got['completion_tokens']:,} out ({rate(got):.1f} tok/s), {got['sft_rows']} SFT rows ({got['verified']} "
            f"verified), {got['pairs']} pairs, failures: {failures}, {got['truncated']} truncated, "
            f"{got['unparsed']} unparsed verdicts, exit {got['exit']}")  # fmt: skip


def figures(arms: list[Arm], results: dict[str, dict[str, Any]], prompts: int) -> list[Figure]:
    """Per arm: its whole-run seconds against the old runtime's (goal: about a third), and its tokens
    written per second against the old runtime's (reported)."""
    old = results.get(OLD)
    old = None if old is None or "error" in old else old
    out = []
    for arm in arms:
        got = results[arm.key]
        name = f"{arm.label}: make data's preset"
        if "error" in got:
            out.append(figure(NAME, name, float("nan"), "s", note=f"FAILED: {got['error']}"))
            continue
        versus = old is not None and arm.key != OLD
        kind = f"{OLD_LABEL}, same preset" if versus else ""
        note = f"{prompts} prompts: {line(got)}"
        goal = "<= 0.34" if versus else ""  # the runtime issue: about a third of the old runtime's time
        out.append(figure(NAME, name, got["seconds"], "s", old["seconds"] if versus else None, kind, goal, note=note))
        out.append(figure(NAME, f"{arm.label}: tokens written per second over the run", rate(got), "tok/s",
                          rate(old) if versus else None, kind))  # fmt: skip
    return out


OLD_LABEL = "llama-cpp-python 0.3.36 server (before)"


@contextmanager
def old_arm(work: Path):
    """The old runtime's server, started by the bench (its start-up timed), or None when not built."""
    from benchmarks.bench_local import old_runtime_site, old_server

    site = old_runtime_site(work)
    if site is None:
        print("   no llama-cpp-python wheel (make old-runtime): the 'before' arm skipped", flush=True)
        yield None
        return
    start = time.perf_counter()
    with old_server(str(site)) as url:
        yield Arm(OLD, OLD_LABEL, base_url=url, startup_s=time.perf_counter() - start)


def run(work: Path, quick: bool = False, prompts: int | None = None, config: str | None = None,
        **_: Any) -> list[Figure]:  # fmt: skip
    from benchmarks.bench_local import native_binary
    from moaa.config import load_config

    path = Path(config) if config else ROOT / "configs/local.yaml"
    if quick and prompts is None:
        prompts = 2
    count = prompts or load_config(path).prompts.limit or 0
    arms = [Arm("xllamacpp", "xllamacpp (moaa's runtime)")]
    binary = native_binary()
    if binary is not None:
        native = (("MOAA_LLAMA_SERVER", str(binary)),)
        arms.append(Arm("native", f"llama-server native build ({binary.name})", env=native))
    else:
        print("   no native llama-server (make native-server): its arm skipped", flush=True)
    results = measure(work, path, arms, prompts)
    with old_arm(work) as old:  # started after the others: its server idles meanwhile otherwise
        if old is not None:
            arms.append(old)
            results |= measure(work, path, [old], prompts)
    print(f"   {path.name}, {count} prompts, {os.cpu_count()} cores", flush=True)
    return figures(arms, results, count)
