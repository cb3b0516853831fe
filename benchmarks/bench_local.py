"""The embedded local model: tokens/s of Qwen2.5-Coder-0.5B (Q4_K_M) served by llama-cpp-python.

llama-cpp-python's server has no parallel-slots option (no `--n_parallel`; its settings are
listed in moaa/local/server.py's notes): every completion takes one global lock, so a server
answers ONE request at a time, and a `--config_file` with several models still serves one at a
time from one process. What can run in parallel is several server processes, which moaa uses as
replicas (`base_url: [url1, url2]`). Measured, each with the same greedy requests:

- in-process `llama_cpp.Llama` (no HTTP), all cores: the ceiling of one model instance;
- one server, all cores, 1 client at a time;
- one server, 2 concurrent clients (they queue on the lock);
- two servers of 1 thread each, 2 concurrent clients (one per server).
Tokens/s counts completion tokens over wall time. On a shared machine the numbers move with the
load from other processes; compare the rows of one run.

Builds: every llama-cpp-python wheel `make setup` / `make llama-wheel LLAMA_BUILD=...` left under
.whl/ (portable: GGML_NATIVE=OFF; variants: + GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS, ggml's
runtime CPU dispatch) is measured in-process side by side, each installed into a scratch folder
that the child imports first; the one in the venv is the row named "installed".
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, figure, run_in_child

NAME = "local"
MAX_TOKENS = 96


def _questions(count: int) -> list[str]:
    import json

    rows = [json.loads(line) for line in (ROOT / "configs/prompts/default.jsonl").open()]
    return [rows[i % len(rows)]["prompt"] for i in range(count)]


def in_process(requests: int, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """Child: greedy completions from llama_cpp.Llama in this process (the ceiling)."""
    from llama_cpp import Llama

    from moaa.local.model import ensure_local_gguf

    threads = os.cpu_count() or 1
    llm = Llama(str(ensure_local_gguf()), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)  # warm-up
    tokens, start = 0, time.perf_counter()
    for q in _questions(requests):
        out = llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=max_tokens, temperature=0)
        tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def served(requests: int, servers: int, clients: int, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """Child: `servers` llama-cpp-python servers (threads split between them), `clients` concurrent clients."""
    from contextlib import ExitStack

    from moaa.local.server import LocalServer

    threads = max(1, (os.cpu_count() or 1) // servers)
    with ExitStack() as stack:
        urls = []
        for _ in range(servers):
            server = stack.enter_context(LocalServer())
            server.start(n_threads=threads)
            urls.append(server.base_url)
        return asyncio.run(_drive(urls, _questions(requests), clients, max_tokens)) | {"threads_per_server": threads}


async def _drive(urls: list[str], questions: list[str], clients: int, max_tokens: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    from moaa.local.model import LOCAL_MODEL_NAME

    apis = [AsyncOpenAI(base_url=u, api_key="local", max_retries=0, timeout=600) for u in urls]
    for api in apis:  # warm-up: first request loads caches
        await api.chat.completions.create(model=LOCAL_MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=8, temperature=0)  # fmt: skip
    todo = iter(questions)
    tokens = 0

    async def client(index: int) -> None:
        nonlocal tokens
        api = apis[index % len(apis)]
        for q in todo:
            out = await api.chat.completions.create(
                model=LOCAL_MODEL_NAME, messages=[{"role": "user", "content": q}], max_tokens=max_tokens, temperature=0
            )
            tokens += out.usage.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    seconds = time.perf_counter() - start
    for api in apis:
        await api.close()
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def build_wheels() -> dict[str, Path]:
    """{build name: wheel} for the llama-cpp-python wheels under .whl/ (see the Makefile)."""
    found = {}
    for wheel in sorted((ROOT / ".whl").glob("llama-cpp-python-*-*/llama_cpp_python-*.whl")):
        found[wheel.parent.name.rsplit("-", 1)[-1]] = wheel
    return found


def build_figures(work: Path, size: dict[str, Any], installed: float) -> list:
    """In-process tok/s of each built wheel, next to the installed build's."""
    import subprocess
    import sys

    figures = []
    for build, wheel in build_wheels().items():
        site = work / f"site-{build}"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       check=True, capture_output=True)  # fmt: skip
        name = f"in-process, llama-cpp-python built '{build}'"
        try:
            got = run_in_child("benchmarks.bench_local:in_process", size, work / f"in-process-{build}.log",
                               env={"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})  # fmt: skip
        except RuntimeError as exc:  # a build that does not run is a result too
            reason = next((line for line in reversed(str(exc).splitlines()) if line.strip()), "failed")
            print(f"   in-process, {build} build: does not run ({reason})", flush=True)
            note = f"does not run: {reason}"
            figures.append(figure(NAME, name, 0.0, "tok/s", installed, "installed build", note=note))
            continue
        print(f"   in-process, {build} build: {got['tokens_per_s']:.1f} tok/s", flush=True)
        note = f"{wheel.name}; same requests as the ceiling row"
        figures.append(figure(NAME, name, got["tokens_per_s"], "tok/s", installed, "installed build", note=note))
    return figures


def run(work: Path, quick: bool, **_: Any) -> list:
    requests, max_tokens = (4, 48) if quick else (12, MAX_TOKENS)
    size = {"requests": requests, "max_tokens": max_tokens}
    ceiling = run_in_child("benchmarks.bench_local:in_process", size, work / "in-process.log")
    print(f"   in-process: {ceiling['tokens_per_s']:.1f} tok/s", flush=True)
    builds = build_figures(work, size, ceiling["tokens_per_s"])
    got = {}
    for s, c in [(1, 1), (1, 2), (2, 2)]:
        got[(s, c)] = run_in_child("benchmarks.bench_local:served", size | {"servers": s, "clients": c},
                                   work / f"served-{s}-{c}.log")  # fmt: skip
        print(f"   {s} server(s), {c} client(s): {got[(s, c)]['tokens_per_s']:.1f} tok/s", flush=True)
    one = got[(1, 1)]
    threads = os.cpu_count() or 1
    figures = [
        figure(NAME, f"in-process llama_cpp.Llama, {threads} threads", ceiling["tokens_per_s"], "tok/s",
               note=f"{ceiling['tokens']} tokens in {ceiling['seconds']:.1f}s, {requests} greedy requests of "
               f"<= {max_tokens} tokens: one instance's ceiling"),
        figure(NAME, "server (moaa's LocalServer), 1 client", one["tokens_per_s"], "tok/s", ceiling["tokens_per_s"],
               "ceiling", ">= 0.85", note=f"{one['threads_per_server']} threads; ceiling = in-process"),
        figure(NAME, "server, 2 concurrent clients", got[(1, 2)]["tokens_per_s"], "tok/s", one["tokens_per_s"],
               "baseline", note="baseline = 1 client; requests queue on the server's lock, so ~1.0 expected"),
        figure(NAME, "2 servers x 1 thread, 2 concurrent clients", got[(2, 2)]["tokens_per_s"], "tok/s",
               one["tokens_per_s"], "baseline",
               note="replicas (base_url: [url1, url2]); baseline = 1 server with all threads, 1 client"),
        *builds,
    ]  # fmt: skip
    return figures
