"""The embedded local model: tokens/s of Qwen2.5-Coder-0.5B (Q4_K_M) on each runtime, side by side.

Runtimes, each started as moaa starts it (a supervised child on 127.0.0.1, all cores) and driven by
the same client (aiohttp, chat completions, 128-token greedy answers to the shipped prompts):
- `xllamacpp`: llama.cpp's C++ server from the prebuilt wheel (moaa's runtime), one parallel slot
  per concurrent request, a thread per core, threads that sleep at a barrier (OMP_WAIT_POLICY=PASSIVE,
  moaa.local.llama_runtime.WAIT_POLICY); the same with a short spin first (GOMP_SPINCOUNT=1000: faster
  on an idle machine); with OpenMP's default of spinning ~3 ms first (GOMP_SPINCOUNT=300000); and with
  one thread (MOAA_LOCAL_THREADS=1);
- `llama-server (native)`: llama.cpp's server compiled for this CPU by `make native-server`, when
  built (or named by MOAA_LLAMA_SERVER);
- `llama-cpp-python 0.3.36`: the runtime moaa used before (its Python server, one request at a time),
  when `make old-runtime` has built its wheel under .whl/ (installed into a scratch folder here).
Each runtime serves 1, 4 and 8 concurrent clients, then 1 client with one busy loop beside it (another
process that wants a whole core): at `nice 19` (a background compile) and at the same priority (its
fair share is one of the machine's cores). Tokens/s counts completion tokens over wall time. The rows
of one run share the machine's load; compare rows of one run, not across runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, figure, run_in_child

NAME = "local"
MAX_TOKENS = 128
OLD_VERSION = "0.3.36"
# What llama-cpp-python's server needed beside it (no longer in the lock): installed with its wheel.
OLD_SERVER_DEPS = ("sse-starlette==3.7.0", "starlette-context==0.3.6", "diskcache==5.6.3")


def _questions() -> list[str]:
    """Questions whose answers run past MAX_TOKENS (explanations and advice, asked at length), so every
    load decodes answers of the same length: short answers would weigh prompt processing instead."""
    rows = [json.loads(line) for line in (ROOT / "configs/prompts/default.jsonl").open()]
    return [f"{r['prompt']} Answer in detail, in at least 200 words." for r in rows
            if "prompt" in r and r.get("category") in ("stem", "advice")]  # fmt: skip


async def _drive(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    import aiohttp

    questions = _questions()
    todo = iter(range(requests))
    tokens = 0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as http:

        async def ask(i: int, limit: int) -> int:
            body = {"model": "local", "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                    "max_tokens": limit, "temperature": 0, "seed": i}  # fmt: skip
            async with http.post(url + "/chat/completions", json=body) as response:
                response.raise_for_status()
                return (await response.json())["usage"]["completion_tokens"]

        await ask(0, 8)  # warm-up: the first request loads caches

        async def client() -> None:
            nonlocal tokens
            for i in todo:
                got = await ask(i, max_tokens)  # not `tokens += await ...`: that reads tokens before the await
                tokens += got

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


@contextmanager
def _busy_loop(nice: int):
    """One other process that wants a whole core, at niceness `nice`."""
    proc = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1)
        yield
    finally:
        proc.kill()
        proc.wait()


def serve_and_measure(runtimes: list[list[str]], loads: list[list[Any]], max_tokens: int) -> dict[str, Any]:
    """Child: start every runtime's server (each [key, site]), then for each load [clients, requests, busy]
    (busy: None, or the niceness of a busy loop beside) drive each server in turn, so that the rows of
    one load share the machine's state; {runtime: {load: tokens/s and counts}}. Idle servers use no CPU."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        urls = {key: stack.enter_context(_server(key, max(c for c, _, _ in loads), site)) for key, site in runtimes}
        results: dict[str, Any] = {key: {} for key in urls}
        for clients, requests, busy in loads:
            for key, url in urls.items():
                with _busy_loop(busy) if busy is not None else nullcontext():
                    got = asyncio.run(_drive(url, clients, requests, max_tokens))
                results[key][_load_key(clients, busy)] = got
                print(f"{key} {_load_key(clients, busy)}: {got['tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
        return results


def _load_key(clients: int, busy: int | None) -> str:
    return f"{clients}" if busy is None else f"{clients}+nice{busy}"


@contextmanager
def _server(runtime: str, slots: int, site: str):
    from moaa.local.server import LocalServer

    if runtime == "old":  # llama-cpp-python's own server, as moaa ran it before
        with old_server(site) as url:
            yield url
        return
    changed = {"MOAA_LLAMA_SERVER": site if runtime == "native" else None,  # read when the server starts
               "GOMP_SPINCOUNT": {"spin": "300000", "spin1k": "1000"}.get(runtime)}  # fmt: skip
    with LocalServer() as server:
        before = {name: os.environ.pop(name, None) for name in changed}
        os.environ.update({name: value for name, value in changed.items() if value is not None})
        try:
            server.start(slots=slots, n_threads=1 if runtime == "t1" else None)
        finally:
            for name, value in before.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value
        yield server.base_url


@contextmanager
def old_server(site: str):
    """llama-cpp-python 0.3.36's own server, imported from `site`, on a free port with every core, as moaa
    ran it before: its URL until the block ends."""
    from moaa.local.model import LOCAL_MODEL_NAME, ensure_local_gguf
    from moaa.local.server import find_running_server, free_port

    port = free_port()
    threads = str(os.cpu_count() or 1)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ensure_local_gguf()),
           "--model_alias", LOCAL_MODEL_NAME, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
           "--n_threads", threads, "--n_threads_batch", threads, "--interrupt_requests", "false"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": site + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while not find_running_server(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama-cpp-python's server did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def old_runtime_site(work: Path) -> Path | None:
    """llama-cpp-python 0.3.36 from `make old-runtime`'s wheel, installed into a scratch folder, or None."""
    wheels = sorted((ROOT / ".whl").glob(f"llama-cpp-python-{OLD_VERSION}-*/llama_cpp_python-*.whl"))
    if not wheels:
        return None
    site = work / "old-runtime-site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheels[-1]),
                    *OLD_SERVER_DEPS], check=True, capture_output=True)  # fmt: skip
    return site


def native_binary() -> Path | None:
    named = os.environ.get("MOAA_LLAMA_SERVER")
    path = Path(named) if named else ROOT / ".native" / "llama-server"
    return path if path.is_file() else None


def run(work: Path, quick: bool, **_: Any) -> list:
    max_tokens = 48 if quick else MAX_TOKENS
    # [clients, requests, niceness of a busy loop beside or None]: every client stays busy a while
    loads = [[1, 2, None], [4, 4, None], [8, 8, None], [1, 2, 19], [1, 2, 0]]
    runtimes: list[tuple[str, str, str]] = [("xllamacpp", "xllamacpp (moaa's runtime)", "")]
    runtimes.append(("spin1k", "xllamacpp, threads spinning 1,000 turns at a barrier first (GOMP_SPINCOUNT=1000)", ""))
    runtimes.append(("spin", "xllamacpp, threads spinning ~3 ms at a barrier (OpenMP's default)", ""))
    runtimes.append(("t1", "xllamacpp, 1 thread (MOAA_LOCAL_THREADS=1)", ""))
    binary = native_binary()
    if binary is not None:
        runtimes.append(("native", f"llama-server native build ({binary.name})", str(binary)))
    else:
        print("   no native llama-server (make native-server): row skipped", flush=True)
    site = old_runtime_site(work)
    if site is not None:
        runtimes.append(("old", f"llama-cpp-python {OLD_VERSION} server (before)", str(site)))
    else:
        print("   no llama-cpp-python wheel (make old-runtime): the 'before' rows skipped", flush=True)
    results = run_in_child("benchmarks.bench_local:serve_and_measure",
                           {"runtimes": [[key, where] for key, _, where in runtimes], "loads": loads,
                            "max_tokens": max_tokens}, work / "local.log", timeout_s=3 * 3600)  # fmt: skip
    for key, label, _ in runtimes:
        cells = ", ".join(f"{load}: {r['tokens_per_s']:.1f}" for load, r in results[key].items())
        print(f"   {label}: {cells} tok/s", flush=True)
    base = results["xllamacpp"]
    figures = []
    described = {"1": "1 client", "4": "4 clients at once", "8": "8 clients at once",
                 "1+nice19": "1 client, a nice-19 busy loop beside it",
                 "1+nice0": "1 client, a busy loop at the same priority beside it"}  # fmt: skip
    goals = {"4": ">= 1.5", "1+nice19": ">= 0.8", "1+nice0": ">= 0.4"}  # vs 1 client alone; 0.5 = fair share
    for key, label, _ in runtimes:
        for load, words in described.items():
            got = results[key].get(load)
            if not isinstance(got, dict):
                continue
            name = f"{label}: {words}"
            if key == "xllamacpp":
                ref, kind = (base["1"]["tokens_per_s"], "1 client") if load != "1" else (None, "")
                goal = goals.get(load, "")
            else:
                ref, kind, goal = base[load]["tokens_per_s"], "xllamacpp, same load", ""
            note = f"{got['tokens']} tokens in {got['seconds']:.1f}s, answers <= {max_tokens} tokens"
            figures.append(figure(NAME, name, got["tokens_per_s"], "tok/s", ref, kind, goal, note=note))
    return figures
