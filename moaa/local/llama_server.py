"""llama.cpp's own HTTP server for the embedded model, as the child process `LocalServer` starts.

`python -m moaa.local.llama_server --model X.gguf --port 8080 [--slots 4] [--n_threads 2]` starts
llama.cpp's C++ server (from the prebuilt `xllamacpp` wheel: no compiler needed) in this process
and keeps it until the process is signalled. With `--binary PATH` it runs that `llama-server`
executable instead (`make native-server` builds one for this CPU from the same llama.cpp source)
with the same settings, as its own child: killed with this process (PR_SET_PDEATHSIG), and its
death by a signal becomes this process's death by that signal, so supervision reads the same.

The server decodes `--slots` requests at once (continuous batching: one forward pass serves every
active slot), answers `response_format`
(OpenAI's `json_schema` and llama.cpp's `json_object` + `schema`, both grammar-constrained),
`logprobs`/`top_logprobs` natively, `n > 1` and `seed`.

Why a child process and not a thread of moaa: a crash in native code (a bad instruction, a fault)
must not take moaa with it; `moaa.local.server.LocalServer` supervises this process and ends the
run with one line when it dies.

Settings chosen here (measured with `make bench ARGS="--only local"`, README "The embedded local
model"):
- `--n_ctx` is per slot: the server's whole context is `slots x n_ctx`, each slot its own part, so a
  long prompt in one slot never shrinks another's;
- all cores as threads (on 2 idle cores, 4 requests at once: 47.5 tokens/s with 2 threads, 30.4
  with 1), which sleep at their barriers (moaa.local.llama_runtime.WAIT_POLICY: one busy process beside
  them costs ~10%, where spinning threads lost 96%);
- no web UI, a prompt cache in RAM of 256 MiB (default 8 GiB), no reasoning-format parsing (the
  embedded model does not think; the client splits `<think>` blocks itself where a model does).
"""

from __future__ import annotations

import argparse
import os
import threading


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m moaa.local.llama_server", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the GGUF file")
    p.add_argument("--model_alias", default="local", help="the model name the server answers to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n_ctx", type=int, default=4096, help="context tokens per slot")
    p.add_argument("--slots", type=int, default=4, help="requests decoded at once")
    p.add_argument("--n_threads", type=int, default=os.cpu_count() or 1, help="threads for generation and prompts")
    p.add_argument("--cache_ram_mib", type=int, default=256, help="prompt cache kept in RAM")
    p.add_argument("--binary", default=None, help="a llama-server executable to run instead of xllamacpp")
    return p.parse_args(argv)


def binary_args(args: argparse.Namespace) -> list[str]:
    """The same settings as `params`, as llama-server's command line."""
    return [args.binary, "--model", args.model, "--alias", args.model_alias, "--host", args.host,
            "--port", str(args.port), "--parallel", str(args.slots), "--ctx-size", str(args.n_ctx * args.slots),
            "--threads", str(args.n_threads), "--threads-batch", str(args.n_threads),
            "--cache-ram", str(args.cache_ram_mib), "--no-webui", "--reasoning-format", "none", "--jinja",
            "--metrics"]  # fmt: skip


def run_binary(args: argparse.Namespace) -> None:
    """Run llama-server as a child that dies with us, and die the way it dies."""
    import ctypes
    import signal
    import subprocess

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    proc = subprocess.Popen(binary_args(args), preexec_fn=lambda: libc.prctl(pr_set_pdeathsig, signal.SIGKILL))
    for sig in (signal.SIGTERM, signal.SIGINT):  # stop it, then end as it ends
        signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
    code = proc.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    raise SystemExit(code)


def params(args: argparse.Namespace):  # -> xllamacpp.CommonParams (imported lazily: a native module)
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.model_alias}  # a set of names (a plain string would become its characters)
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = args.slots
    p.n_ctx = args.n_ctx * args.slots
    p.kv_unified = False  # each slot owns n_ctx tokens
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = args.n_threads
    p.cache_ram_mib = args.cache_ram_mib
    p.ui = False
    p.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
    p.endpoint_metrics = True
    return p


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # llama.cpp reads LLAMA_ARG_* variables as settings in its own CLI; none may change ours.
    for key in [k for k in os.environ if k.startswith("LLAMA_ARG_")]:
        del os.environ[key]
    if args.binary:
        run_binary(args)
    import xllamacpp

    server = xllamacpp.Server(params(args))  # loads the model and listens; the HTTP loop runs in its threads
    print(f"moaa llama_server: xllamacpp {xllamacpp.__version__} listening on {args.host}:{args.port} "
          f"({args.slots} slots x {args.n_ctx} tokens, {args.n_threads} threads)", flush=True)  # fmt: skip
    threading.Event().wait()  # until SIGTERM/SIGKILL (LocalServer.stop) or the parent's watcher exits us
    del server


if __name__ == "__main__":
    main()
