"""What runs the embedded model's server, and with which settings: the prebuilt llama.cpp of the
`xllamacpp` wheel or a native `llama-server` ($MOAA_LLAMA_SERVER, `make native-server`), its threads
($MOAA_LOCAL_THREADS), its environment (how OpenMP's threads wait), and the wrapper the child runs in
so it exits with its parent. moaa.local.server starts and supervises the process.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from moaa.errors import MoaaError

# Runs in the child (also Prefect's database child, see flows.prefect_env): exit when the parent
# goes away (PR_SET_PDEATHSIG would fire when the *thread* that started us ends, e.g. a worker
# thread of a flow), then run the server module as `python -m <module>` would.
WATCHED_CHILD = """\
# moaa child server: python -m <module>, exits with its parent (see moaa/local/llama_runtime.py)
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
module = sys.argv.pop(1)
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""

RUNTIME_PACKAGE = "xllamacpp"  # pinned in pyproject.toml and requirements.lock
NATIVE_VARIABLE = "MOAA_LLAMA_SERVER"  # a llama-server executable to use instead (`make native-server`)
THREADS_VARIABLE = "MOAA_LOCAL_THREADS"  # the server's threads (unset: every core)
# llama.cpp's threads meet at an OpenMP barrier after every step of a forward pass. By default
# libgomp spins ~3 ms there before sleeping, so a waiting thread holds its core; when another process
# wants that core, the thread that must arrive is descheduled while its partner spins: beside one
# busy loop decoding fell from 38.8 to 1.0-1.3 tokens/s. Threads that sleep at once (PASSIVE) hand the
# core over and kept 25.5-26.4 of their 29 tokens/s (README, `make bench ARGS="--only local"`).
# Measured and not chosen: a short spin (GOMP_SPINCOUNT=1000) decodes faster on an idle machine
# (2-core Xeon, 2026-12-07: 22.0 against 16.2 tokens/s for one client, 47.3 against 39.8 for four;
# `make data` 278-302 s against 314-352 s), but beside a `nice 19` busy loop it kept 10.0 tokens/s
# against 12.1, and beside one at the same priority 10.1 against 12.2; a background job must not
# halve a run. A user's own OMP_WAIT_POLICY (or GOMP_SPINCOUNT, e.g. 1000 on an idle machine) wins.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
CPU_HINT = (
    "the prebuilt llama.cpp in xllamacpp needs an x86-64 CPU with AVX2, FMA and F16C (Intel Haswell, "
    "AMD Zen or newer) or an ARMv8 CPU; on another CPU build llama.cpp's server for it with "
    '`make native-server` (README, "The embedded local model")'
)


def native_binary() -> Path | None:
    """The llama-server executable `$MOAA_LLAMA_SERVER` names (`make native-server` builds one), if set."""
    named = os.environ.get(NATIVE_VARIABLE)
    if not named:
        return None
    path = Path(named).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MoaaError(
            f"${NATIVE_VARIABLE} names {path}, which is not an executable file: build it with `make native-server`, "
            f"or unset {NATIVE_VARIABLE} to use the prebuilt server"
        )
    return path


def default_threads() -> int:
    """$MOAA_LOCAL_THREADS, or every core: the fastest on an otherwise idle machine (README)."""
    named = os.environ.get(THREADS_VARIABLE, "").strip()
    if not named:
        return os.cpu_count() or 1
    if not named.isdigit() or int(named) < 1:
        raise MoaaError(f"${THREADS_VARIABLE} is {named!r}: set it to a number of threads (1 or more), or unset it")
    return int(named)


def server_environment() -> dict[str, str]:
    """The server's environment: ours, with threads that sleep at a barrier unless the user chose
    how OpenMP waits (WAIT_POLICY)."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env.update(WAIT_POLICY)
    return env


def runtime_name() -> str:
    """What serves the embedded model: 'xllamacpp 2026.10.11549' or 'llama-server (native build at PATH)'."""
    binary = native_binary()
    if binary is not None:
        return f"llama-server (native build at {binary})"
    import importlib.metadata

    return f"{RUNTIME_PACKAGE} {importlib.metadata.version(RUNTIME_PACKAGE)}"


def require_runtime() -> None:
    """Fail with what to run when neither the prebuilt server nor a native one is installed."""
    if native_binary() is None and importlib.util.find_spec(RUNTIME_PACKAGE) is None:
        raise MoaaError(
            f"{RUNTIME_PACKAGE} (llama.cpp's server, prebuilt) is not installed, so the local model cannot be "
            "served: run `make setup`"
        )
