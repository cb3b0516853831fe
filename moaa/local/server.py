"""The embedded local model served by llama.cpp's own HTTP server (the prebuilt `xllamacpp` wheel).

`LocalServer` runs `python -m moaa.local.llama_server --model <gguf> ...` as a child process on
127.0.0.1 (free port unless one is asked for), waits until `GET /v1/models` answers and a 1-token
completion comes back, and stops it on `stop()`, on leaving its `with` block (Ctrl-C and errors
included) and at exit. The child also watches its parent and exits if the parent dies, even by
SIGKILL.

What this server does (checked against xllamacpp 2026.10.11549, see tests/test_local_server.py):
- It decodes `slots` requests at once (continuous batching); moaa gives it one slot per request the
  local endpoints may have in flight (their `max_concurrency`, 4 by default).
- It answers `n > 1` with n choices but reports the usage of one of them, so the local endpoint
  keeps `supports_n: false`: moaa sends n seeded requests, which the slots decode together, and
  counts every token.
- It renders the GGUF's own chat template (Jinja), as the model's authors wrote it.
- `response_format` in both shapes (OpenAI's json_schema, llama.cpp's json_object + schema) becomes
  a grammar; `logprobs` / `top_logprobs` are computed natively.

Which llama.cpp runs it, with which threads and environment: moaa.local.llama_runtime.

Usage: `moaa serve --port 8080`, or `with LocalServer() as s: s.start(); print(s.base_url)`.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moaa.config.endpoints import LOCAL_SLOTS
from moaa.errors import MoaaError
from moaa.local.llama_runtime import (
    CPU_HINT,
    WATCHED_CHILD,
    default_threads,
    native_binary,
    require_runtime,
    runtime_name,
    server_environment,
)
from moaa.local.model import LOCAL_MODEL_NAME, ensure_local_gguf, moaa_home

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080
SERVER_MODULE = "moaa.local.llama_server"
DEFAULT_SLOTS = LOCAL_SLOTS  # the local endpoint's default max_concurrency
# Signals a CPU-specific build dies with on a CPU that lacks its instructions (SIGILL) or that
# runs them on data it misreads (SIGSEGV/SIGBUS: seen as a general-protection fault on AVX-512/AMX).
_CPU_SIGNALS = {int(s) for s in (signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE)}
_supervised: dict[str, LocalServer] = {}  # base_url -> the server this process started there


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


def log_tail(path: Path | None, lines: int = 3) -> str:
    """The last `lines` non-empty lines of a log, joined on one line (each cut to 200 characters)."""
    if path is None:
        return ""
    try:
        found = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(line[:200] for line in found[-lines:])


def describe_exit(code: int) -> str:
    """'was killed by SIGSEGV (signal 11)' or 'exited with code 1', for a Popen returncode."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by {name} (signal {-code})"
    return f"exited with code {code}"


def dead_server_message(base_url: str, grace_s: float = 2.0) -> str | None:
    """Why the local server this process started at `base_url` is gone, or None if it is not ours
    or still running. The client asks this on a connection error, so a dead server ends the run
    at once instead of being retried; `grace_s` covers the moment between a crashed server's
    sockets closing and its exit status being known."""
    server = _supervised.get(base_url.rstrip("/"))
    return server.exit_message(grace_s) if server is not None else None


class LocalServer:
    """The embedded model behind llama.cpp's OpenAI-compatible server, as a child process.

    Supervised: a watcher thread notices the child's exit at once; `exit_message()` says why it
    died (signal or exit code, the log's last lines, the log's path), and the client turns a
    connection error to a dead server into a run-fatal error (moaa.models.client).
    """

    def __init__(self, gguf_path: Path | None = None, model: str = LOCAL_MODEL_NAME, module: str | None = None):
        self.gguf_path = gguf_path
        self.model = model  # the name the server answers to (`--model_alias`)
        self.module = module or SERVER_MODULE  # the server module the child runs (tests use a fake one)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.log_path: Path | None = None
        self.exit_code: int | None = None  # set by the watcher when the child ends on its own
        self._proc: subprocess.Popen | None = None
        self._stopping = False

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
        n_threads: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 180,
        slots: int = DEFAULT_SLOTS,
    ) -> LocalServer:
        """Start the server (`slots` requests decoded at once, `n_ctx` tokens each, `n_threads` threads:
        unset, $MOAA_LOCAL_THREADS or every core) and wait until it answers a 1-token completion;
        returns self."""
        if self._proc is not None:
            raise RuntimeError("LocalServer.start() called twice")
        if port is not None and port_in_use(host, port):
            raise MoaaError(
                f"port {port} on {host} is already in use: choose another with --port or stop the process using it"
            )
        if self.module == SERVER_MODULE:
            require_runtime()
        gguf = Path(self.gguf_path) if self.gguf_path is not None else ensure_local_gguf()
        self.host, self.port = host, port if port is not None else free_port(host)
        self.log_path = Path(log_path or moaa_home() / "logs" / f"local-server-{self.port}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        threads = str(n_threads or default_threads())
        args = ["--model", str(gguf), "--model_alias", self.model, "--host", host, "--port", str(self.port),
                "--n_ctx", str(n_ctx), "--slots", str(max(1, slots)), "--n_threads", threads]  # fmt: skip
        binary = native_binary() if self.module == SERVER_MODULE else None
        if binary is not None:
            args += ["--binary", str(binary)]
        with open(self.log_path, "w") as log:
            log.write(f"# python -m {self.module} {' '.join(args)}\n")
            log.flush()
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the child in order.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", WATCHED_CHILD, str(os.getpid()), self.module, *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=server_environment(),
            )  # fmt: skip
        atexit.register(self.stop)
        _supervised[self.base_url] = self
        threading.Thread(target=self._watch, args=(self._proc,), name="moaa-local-server-watch", daemon=True).start()
        logger.info("starting the local model server (pid %d, log %s)", self._proc.pid, self.log_path)
        try:
            self._wait_ready(startup_timeout)
            self._probe_completion(startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _watch(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if not self._stopping:
            self.exit_code = code
            # Debug only: the run's next call to it raises with this message (moaa.models.client), once.
            logger.debug("%s", self._death_message(code, "during the run"))

    def _death_message(self, code: int, when: str) -> str:
        pid = self._proc.pid if self._proc is not None else "?"
        tail = log_tail(self.log_path)
        message = f"the local model server (pid {pid}) {describe_exit(code)} {when}"
        message += f"; last log lines: {tail}" if tail else ""
        message += f"; full log: {self.log_path}"
        if -code in _CPU_SIGNALS:
            message += f"; a crash like this usually means a CPU the build does not support: {CPU_HINT}"
        return message

    def exit_message(self, grace_s: float = 0.0) -> str | None:
        """Why the server ended on its own (waiting up to `grace_s` for a dying one), else None."""
        deadline = time.monotonic() + grace_s
        while True:
            if self._stopping or self._proc is None:
                return None
            code = self._proc.poll()
            if code is not None:
                return self._death_message(code, "during the run")
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise MoaaError(self._death_message(code, "while starting"))
            if find_running_server(self.base_url, self.model, timeout=1.0):
                return
            time.sleep(0.25)
        raise MoaaError(
            f"the local model server did not answer on {self.base_url} within {timeout:.0f}s: see {self.log_path}"
        )

    def _probe_completion(self, timeout: float) -> None:
        """One 1-token completion: a build that answers `GET /models` can still crash on its first
        completion (a CPU-specific llama.cpp build did, with a general-protection fault)."""
        self.complete("Say OK.", 1, timeout, "on its first completion, after a good health check")

    def complete(self, content: str, max_tokens: int, timeout: float, when: str) -> dict[str, Any]:
        """One greedy completion of a one-message chat, as the server's JSON; a MoaaError naming the
        crash (`when` it happened) or the bad answer when there is none."""
        import httpx

        body = {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
        try:
            response = httpx.post(self.base_url + "/chat/completions", json=body, timeout=timeout)
            if response.status_code == 200:
                return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            code = self._exit_code_within(2.0)
            if code is not None:
                raise MoaaError(self._death_message(code, when)) from None
            raise MoaaError(
                f"the local model server answered its health check but not a {max_tokens}-token completion "
                f"({exc}): see {self.log_path}"
            ) from None
        raise MoaaError(
            f"the local model server answered a {max_tokens}-token completion with HTTP {response.status_code} "
            f"({response.text[:200]}): see {self.log_path}"
        )

    def _exit_code_within(self, seconds: float) -> int | None:
        try:
            return self._proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server, kill it if it lingers, and wait for it. Safe to call twice."""
        self._stopping = True
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if self.port is not None and _supervised.get(self.base_url) is self:
            del _supervised[self.base_url]
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


def serve_forever(
    port: int = DEFAULT_PORT, host: str = "127.0.0.1", echo: Callable[[str], None] = print, slots: int = DEFAULT_SLOTS
) -> None:
    """`moaa serve`: run the local model server in the foreground until Ctrl-C."""
    with LocalServer() as server:
        url = f"http://{host}:{port}/v1"
        if port_in_use(host, port) and find_running_server(url, server.model):
            raise MoaaError(f"the local model is already served at {url}: use it, or pick another --port")
        echo(f"starting {server.model} on {url} ...")
        server.start(port=port, host=host, slots=slots)
        echo(
            f"serving {server.model} at {server.base_url} (OpenAI-compatible, {slots} requests at once; "
            f"log: {server.log_path})"
        )
        echo("point a config at it with:\n" + config_hint(server.base_url, server.model))
        echo("Ctrl-C to stop")
        try:
            code = server.wait()
        except KeyboardInterrupt:
            echo("stopping")
            return
        raise MoaaError(server._death_message(code, "while serving"))


def smoke_test(echo: Callable[[str], None] = print, timeout: float = 180) -> None:
    """`moaa serve --smoke` (the end of `make setup`): start the embedded server and get one real,
    short chat completion, so a broken build or model fails here with one line, not in a run."""

    started = time.monotonic()
    with LocalServer() as server:
        server.start(log_path=moaa_home() / "logs" / "setup-smoke.log", startup_timeout=timeout)
        reply = server.complete("Reply with exactly one word: ready", 8, timeout, "on the smoke completion")
    try:
        text = reply["choices"][0]["message"]["content"].strip()
        tokens = int(reply["usage"]["completion_tokens"])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MoaaError(f"the local model server gave no usable answer ({exc!r}): see {server.log_path}") from None
    if not text:
        raise MoaaError(f"the local model answered with empty text: see {server.log_path}")
    echo(
        f"local model OK: {server.model} answered {text[:40]!r} ({tokens} tokens, "
        f"{time.monotonic() - started:.1f}s including start-up; {runtime_name()})"
    )
