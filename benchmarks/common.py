"""Shared pieces of the benchmarks: the test server subprocess, configs, child runs, result rows.

Each measurement runs in a fresh child process (`run_in_child`), so one benchmark's memory, threads
and event loops never colour the next, and a child's peak RSS is its own (`ru_maxrss`).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moaa.testing.server_process import ServerProcess

if TYPE_CHECKING:
    from moaa.rows import Prompt

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class Figure:
    """One row of the results table: a measured value and what it is compared with."""

    bench: str
    name: str
    value: float
    unit: str
    reference: float | None = None  # the ceiling or target the value is compared with
    reference_kind: str = ""  # "ceiling", "target", "baseline"
    goal: str = ""  # what the ratio (or the value, without a reference) should be, e.g. ">= 0.85"
    ok: bool | None = None  # whether the goal is met (None: no goal)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference in (None, 0):
            return None
        return self.value / self.reference

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


def check(value: float, goal: str) -> bool:
    """Whether `value` meets a goal written as '<op> <number>' (ops: >=, <=, <, >, =)."""
    op, number = goal.split()
    limit = float(number)
    return {">=": value >= limit, "<=": value <= limit, "<": value < limit, ">": value > limit, "=": value == limit}[op]


def figure(bench: str, name: str, value: float, unit: str, reference: float | None = None, kind: str = "",
           goal: str = "", note: str = "", **extra: Any) -> Figure:  # fmt: skip
    """A Figure whose `ok` is decided from its goal (applied to the ratio, or to the value)."""
    fig = Figure(bench, name, value, unit, reference, kind, goal, None, note, extra)
    if goal:
        measured = fig.ratio if reference else value
        fig.ok = check(measured, goal) if measured is not None else None
    return fig


class TestServer(ServerProcess):
    """moaa's OpenAI-compatible test server as a subprocess (its own GIL): fixed latency, no model."""

    def __init__(self, latency_ms: float = 50, filler_words: int = 0, log_path: Path | None = None, *args: str):
        flags = ["--latency-ms", str(latency_ms), "--filler-words", str(filler_words), *args]
        super().__init__(*flags, log_path=log_path, cwd=ROOT)


def load_prompt_file(path: Path, limit: int | None, checked_only: bool = False) -> list[Prompt]:
    """moaa's prompts of a shipped file (only those with a reference if `checked_only`), the first `limit`."""
    from moaa.config import PromptSourceConfig
    from moaa.sources import load_prompts

    prompts = load_prompts(PromptSourceConfig(path=str(path), limit=None)).prompts
    prompts = [p for p in prompts if p.reference] if checked_only else prompts
    return prompts[:limit] if limit else prompts


def write_prompts(path: Path, count: int) -> Path:
    """`count` distinct synthetic instructions as JSONL ({id, category, prompt}), written once."""
    if path.exists() and sum(1 for _ in path.open()) == count:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    topics = ("rivers", "compilers", "tides", "bread", "orbits", "markets", "proteins", "glaciers", "poetry")
    with path.open("w") as fh:
        for i in range(count):
            text = f"Explain {topics[i % len(topics)]} to a curious student in two sentences (question {i})."
            fh.write(json.dumps({"id": f"q{i}", "category": "bench", "prompt": text}) + "\n")
    return path


def moa_raw(work: Path, base_url: str, prompts_path: Path, *, concurrency: int = 64, cache: bool = True,
            shard_size: int = 100, name: str = "bench-moa") -> dict[str, Any]:  # fmt: skip
    """A config (plain data) for the benchmark MoA: 3 proposers + aggregator on one test endpoint."""
    return {
        "name": name,
        "endpoints": {
            "bench": {
                "base_url": base_url,
                "model": "test-model",
                "max_concurrency": concurrency,
                "max_retries": 3,
                "backoff_s": 0.05,
                "timeout_s": 60,
                "sampling": {"max_tokens": 256},
            }
        },  # fmt: skip
        "prompts": {"path": str(prompts_path), "dedup": True},
        "sft": {
            "method": "moa",
            "layers": 2,
            "proposers": [{"endpoint": "bench", "temperature": t} for t in (0.3, 0.7, 1.0)],
            "aggregator": {"endpoint": "bench", "temperature": 0.2},
        },
        "output": {"root": str(work / "data"), "test_size": 0.1},
        "run": {"work_dir": str(work / "work"), "shard_size": shard_size},
        "cache": {"enabled": cache, "path": str(work / "cache.sqlite")},
    }


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_in_child(target: str, kwargs: dict[str, Any], log_path: Path, timeout_s: float = 3600,
                 kill_when: Any = None, env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `module:function(**kwargs)` in a fresh Python process and return its JSON result.

    The result gains `maxrss_bytes` (the child's own peak RSS) and `tree_peak_rss_bytes` (the
    sampled peak of the child and its descendants, e.g. Prefect's API server). `kill_when()` is
    polled twice a second; when it returns True the child's process group is SIGKILLed and
    {"killed": True} is returned. `env` is added to this process's environment.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.child", target, json.dumps(kwargs)]
    env = os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")} | (env or {})
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                start_new_session=True)  # fmt: skip
        sampler = TreeSampler(proc.pid)
        sampler.start()
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        killed = False
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            elif time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise TimeoutError(f"{target} ran past {timeout_s:.0f}s (log: {log_path})")
            time.sleep(0.5)
        proc.wait()
        _reap_group(proc.pid)
        reader.join(5)
        sampler.stop()
    if killed:
        return {"killed": True, "tree_peak_rss_bytes": sampler.peak}
    lines = [line for line in out if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{target} failed (exit {proc.returncode}); log {log_path}:\n" + "\n".join(tail))
    result = json.loads(lines[-1][len("RESULT ") :])
    result["tree_peak_rss_bytes"] = sampler.peak
    return result


def _reap_group(pgid: int) -> None:
    """Stop what the child left in its own process group (its Prefect API server, say)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    time.sleep(0.5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_sampled(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path,
                timeout_s: float) -> dict[str, Any]:  # fmt: skip
    """Run `cmd` as a whole process (its own session, output to `log_path`) to its end: its exit
    code, start time, wall seconds and its process tree's peak RSS, sampled every 0.2 s."""
    with log_path.open("w") as log:
        began = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval_s=0.2)
        sampler.start()
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:  # stop the command and what it started, then say so
            _reap_group(proc.pid)
            proc.wait()
            raise
        finally:
            sampler.stop()
    return {"code": code, "began": began, "seconds": time.time() - began, "tree_peak_rss_bytes": sampler.peak}


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and its descendants (psutil, else /proc) every `interval_s`."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.peak, self.interval_s, self._halt = pid, 0, interval_s, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants now (0 once it is gone)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _proc_tree_rss(pid: int) -> int:
    """tree_rss from /proc (Linux) without psutil: parents from /proc/*/stat, RSS from statm."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
            children.setdefault(ppid, []).append(int(entry))
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo += children.get(current, [])
    return total


def self_maxrss() -> int:
    """This process's peak RSS in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def shard_of(prompts_path: Path, folder: Path) -> Path:
    """One input shard holding every prompt of `prompts_path`, as the pipeline would write it."""
    from moaa.rows import Prompt
    from moaa.work.shards import write_jsonl_atomic

    def records():
        with prompts_path.open() as fh:
            for line in fh:
                row = json.loads(line)
                prompt = Prompt.from_messages([{"role": "user", "content": row["prompt"]}], "bench", row["category"])
                yield prompt.to_dict()

    path = folder / "inputs" / "shard-00000.jsonl"
    write_jsonl_atomic(path, records())
    return path


class PrefectServer:
    """`prefect server start` on a free port with its own PREFECT_HOME (SQLite), shared by child runs.

    Children given `env()` talk to it instead of each starting Prefect's ephemeral API (tens of
    seconds on a loaded machine), which is also how a deployment's runs reach their server.
    """

    def __init__(self, home: Path, startup_timeout_s: float = 300):
        self.home, self.timeout = home, startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.url, "PREFECT_HOME": str(self.home)}

    def __enter__(self) -> PrefectServer:
        import socket

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.home.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                            "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
        env.pop("PREFECT_API_URL", None)
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        log = (self.home / "server.log").open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited early: see {self.home / 'server.log'}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"prefect server did not answer within {self.timeout:.0f}s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def pipeline_run(config_path: str, runs: int = 1) -> dict[str, Any]:
    """Child: run the pipeline flow on a config as `moaa run` does, `runs` times; summaries and seconds."""
    from flows.prefect_env import ensure_api, stop_api

    ensure_api()
    from flows.pipeline_flow import moaa_pipeline, task_runner_for
    from moaa.config import load_config

    flow = moaa_pipeline.with_options(task_runner=task_runner_for(load_config(config_path)))
    out = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            summary = flow(config_path, [])
            out.append({"seconds": time.perf_counter() - start, "summary": summary, "maxrss_bytes": self_maxrss()})
    finally:
        stop_api()  # before the interpreter's shutdown (flows.prefect_env.stop_api)
    return {"runs": out}


def count_lines(paths: Any) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            total += sum(1 for line in fh if line.endswith(b"\n"))
    return total
