"""The embedded local model served by llama-cpp-python's OpenAI-compatible server.

`LocalServer` runs `python -m llama_cpp.server --model <gguf> ...` as a child process on
127.0.0.1 (free port unless one is asked for), waits until `GET /v1/models` answers, and
stops it on `stop()`, on leaving its `with` block (Ctrl-C and errors included) and at exit.
The child also watches its parent and exits if the parent dies, even by SIGKILL.

What this server does (checked against llama-cpp-python 0.3.36, see tests/test_local_server.py):
- It answers ONE request at a time: every completion takes a global lock, so concurrent
  requests queue; clients gain nothing from more than one in flight (max_concurrency 1).
- It silently ignores `n`: a request with n=2 returns a single choice. Clients must ask
  n times instead.
- With no `--chat_format`, llama-cpp-python compares the GGUF's `tokenizer.chat_template`
  with a few built-in templates and, finding no exact match for Qwen2.5, renders the
  GGUF's own Jinja template ("chat_template.default"); we pass nothing so that happens.
- `--n_threads` defaults to cpu_count // 2 (one thread on 2 cores): we pass all cores.
- `interrupt_requests` defaults to true, which cuts a streaming response short as soon as
  another request waits; we turn it off so concurrent streams queue instead.
- pydantic-settings lets environment variables (API_KEY, HOST, PORT, CHAT_FORMAT, ...) override
  the server's settings; the child drops those so a stray `API_KEY` cannot lock us out.

Usage: `moaa serve --port 8080`, or `with LocalServer() as s: s.start(); print(s.base_url)`.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from moaa.errors import MoaaError
from moaa.local_model import LOCAL_MODEL_NAME, ensure_local_gguf, moaa_home

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080

# Runs in the child: exit when the parent goes away (PR_SET_PDEATHSIG would fire when the
# *thread* that started us ends, e.g. a worker thread of a flow), drop settings-bearing
# environment variables, then run the server module as `python -m llama_cpp.server` would.
_CHILD = """\
# moaa local model server: python -m llama_cpp.server (see moaa/local_server.py)
import os, runpy, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
from llama_cpp.server.settings import Settings
for key in list(os.environ):
    if key.lower() in Settings.model_fields or key in ("HOST", "PORT", "CONFIG_FILE"):
        del os.environ[key]
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails the way uvicorn's bind would (SO_REUSEADDR set)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_running_server(base_url: str, model: str | None = None, timeout: float = 2.0) -> bool:
    """Whether an OpenAI-compatible server answers `GET {base_url}/models` (serving `model`, if given)."""
    import httpx

    try:
        response = httpx.get(base_url.rstrip("/") + "/models", timeout=timeout)
        data = response.json()["data"] if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(data, list):
        return False
    return model is None or any(isinstance(m, dict) and m.get("id") == model for m in data)


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise MoaaError(
            "llama-cpp-python is not installed, so the local model cannot be served: "
            "run `make setup` or `pip install 'llama-cpp-python[server]'`"
        )


def _last_log_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class LocalServer:
    """The embedded model behind llama-cpp-python's OpenAI-compatible server, as a child process."""

    def __init__(self, gguf_path: Path | None = None, model: str = LOCAL_MODEL_NAME) -> None:
        self.gguf_path = gguf_path
        self.model = model  # the name the server answers to (`--model_alias`)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalServer.base_url read before start()")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        n_ctx: int = 4096,
        n_threads: int | None = os.cpu_count(),
        log_path: Path | None = None,
        startup_timeout: float = 180,
    ) -> LocalServer:
        """Start the server and wait until it answers; returns self."""
        if self._proc is not None:
            raise RuntimeError("LocalServer.start() called twice")
        if port is not None and port_in_use(host, port):
            raise MoaaError(
                f"port {port} on {host} is already in use: choose another with --port or stop the process using it"
            )
        _require_llama_cpp()
        gguf = Path(self.gguf_path) if self.gguf_path is not None else ensure_local_gguf()
        self.host, self.port = host, port if port is not None else free_port(host)
        self.log_path = Path(log_path or moaa_home() / "logs" / f"local-server-{self.port}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        threads = str(n_threads or os.cpu_count() or 1)
        args = ["--model", str(gguf), "--model_alias", self.model, "--host", host, "--port", str(self.port),
                "--n_ctx", str(n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
                "--interrupt_requests", "false"]  # fmt: skip
        with open(self.log_path, "w") as log:
            log.write(f"# python -m llama_cpp.server {' '.join(args)}\n")
            log.flush()
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the child in order.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(os.getpid()), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        atexit.register(self.stop)
        logger.info("starting the local model server (pid %d, log %s)", self._proc.pid, self.log_path)
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise MoaaError(
                    f"the local model server exited with code {code} while starting "
                    f"({_last_log_line(self.log_path)}): see {self.log_path}"
                )
            if find_running_server(self.base_url, self.model, timeout=1.0):
                return
            time.sleep(0.25)
        raise MoaaError(
            f"the local model server did not answer on {self.base_url} within {timeout:.0f}s: see {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server, kill it if it lingers, and wait for it. Safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # its own process group, see start()
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                logger.warning("local model server ignored SIG%s; killing it", sig.name[3:])
        proc.wait()
        logger.info("local model server stopped")

    def wait(self) -> int:
        """Block until the server process ends; its exit code."""
        if self._proc is None:
            raise RuntimeError("LocalServer.wait() called before start()")
        return self._proc.wait()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def config_hint(base_url: str, model: str = LOCAL_MODEL_NAME) -> str:
    """YAML that points a moaa config's endpoint at an already running server."""
    return f"endpoints:\n  local:\n    local: true\n    model: {model}\n    base_url: {base_url}\n"


def serve_forever(port: int = DEFAULT_PORT, host: str = "127.0.0.1", echo: Callable[[str], None] = print) -> None:
    """`moaa serve`: run the local model server in the foreground until Ctrl-C."""
    with LocalServer() as server:
        url = f"http://{host}:{port}/v1"
        if port_in_use(host, port) and find_running_server(url, server.model):
            raise MoaaError(f"the local model is already served at {url}: use it, or pick another --port")
        echo(f"starting {server.model} on {url} ...")
        server.start(port=port, host=host)
        echo(f"serving {server.model} at {server.base_url} (OpenAI-compatible; log: {server.log_path})")
        echo("point a config at it with:\n" + config_hint(server.base_url, server.model))
        echo("Ctrl-C to stop")
        try:
            code = server.wait()
        except KeyboardInterrupt:
            echo("stopping")
            return
        raise MoaaError(f"the local model server exited with code {code}: see {server.log_path}")
