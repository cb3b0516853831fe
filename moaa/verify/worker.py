"""Check workers: child processes that run the answer, constraints, SQL and own checks.

Those checks parse text the model wrote (sympy can be asked for 10^(10^10)), import NLTK and
if-verifiable, and call your code, so none of them runs in the pipeline's process: each request
goes to a worker (`python -m moaa.verify.worker`, one JSON line in, one out), which answers with a
verdict or is killed at the time limit and replaced, the check then unverifiable. A worker runs
checks in its main thread (math-verify's time limits need signal.alarm) under a 2 GiB address-space
limit, and imports the libraries once.

    pool = check_workers(2)                       # one pool per process, grown to the largest size asked
    verdict = pool.run({"kind": "answer", ...}, timeout_s=20)   # blocking: call it from a thread
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import resource
import selectors
import subprocess
import sys
import threading
import time
from typing import Any

from moaa.rows import Prompt, Reference
from moaa.verify.verdict import Verdict, unverifiable

log = logging.getLogger(__name__)

WORKER_MEMORY = 2 * 1024**3


class _Worker:
    """One worker process and its pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)  # this process's moaa and checks
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moaa.verify.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
        self.buffer = b""

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The worker's answer to `request`; TimeoutError past `timeout_s`, EOFError when it died."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class CheckWorkers:
    """A pool of check workers, started as needed; each request is one worker's at a time."""

    def __init__(self, size: int):
        self.size = size
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._closed = False

    def grow(self, size: int) -> None:
        with self._lock:
            self.size = max(self.size, size)

    def run(self, request: dict[str, Any], timeout_s: float) -> Verdict:
        """The verdict of `request` (kind, reference, text, prompt, settings), unverifiable when the
        worker ran out of time or died."""
        worker = self._take()
        try:
            reply = worker.ask(request, timeout_s)
        except TimeoutError:
            worker.kill()
            self._lost()
            return unverifiable(f"the check ran longer than {timeout_s:g} s", request["kind"])
        except (EOFError, OSError, json.JSONDecodeError) as exc:
            worker.kill()
            self._lost()
            code = worker.proc.returncode
            return unverifiable(f"the check worker died ({type(exc).__name__}, exit code {code})", request["kind"])
        except BaseException:  # a request that cannot be sent (a bug): never keep the pool's worker
            worker.kill()
            self._lost()
            raise
        self._idle.put(worker)
        return Verdict(
            reply["status"], reply.get("reason", ""), reply.get("score"), tuple(reply["checks"]),
            reply.get("details", {}), reply.get("feedback", ""),
        )  # fmt: skip

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the check workers are closed")
            if self._idle.empty() and self._started < self.size:
                worker = _Worker()  # counted once it exists: a failed start leaves room for the next
                self._started += 1
                return worker
        return self._idle.get()

    def _lost(self) -> None:
        with self._lock:
            self._started -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while not self._idle.empty():
            worker = self._idle.get_nowait()
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()  # the worker's loop ends at EOF
            try:
                worker.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                worker.kill()


_pool: CheckWorkers | None = None
_pool_lock = threading.Lock()


def check_workers(size: int) -> CheckWorkers:
    """This process's pool of check workers, at least `size` strong (closed when the process exits)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._closed:
            _pool = CheckWorkers(size)
            atexit.register(_pool.close)
        else:
            _pool.grow(size)
        return _pool


# ---------------------------------------------------------------- inside the worker


def handle(request: dict[str, Any]) -> Verdict:
    """One check, as the worker runs it."""
    kind, text = request["kind"], request["text"]
    reference = Reference.from_dict(request.get("reference") or {})
    settings = request.get("settings", {})
    if kind == "answer":
        from moaa.verify.answer import check_answer

        assert reference.answer is not None
        return check_answer(reference.answer, text)
    if kind == "constraints":
        from moaa.verify.constraints import check_constraints

        prompt = request.get("prompt_text", "")
        mode = settings.get("constraints", "strict")
        return check_constraints(list(reference.instructions), list(reference.kwargs), prompt, text, mode)
    if kind == "sql":
        from moaa.verify.sql import check_sql

        return check_sql(reference, text, settings.get("timeout_s", 10.0))
    if kind == "own":
        from moaa.verify.own import run_own_check

        return run_own_check(settings["check"], text, Prompt(**request["prompt"]))
    raise ValueError(f"unknown check kind {kind!r}")


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    for line in sys.stdin:
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            verdict = handle(request)
        except MemoryError:
            verdict = unverifiable("the check ran out of memory (2 GiB)", request.get("kind", "check"))
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the worker
            verdict = unverifiable(f"the check raised {type(exc).__name__}: {exc}", request.get("kind", "check"))
        sys.stdout.write(json.dumps(verdict.to_dict(), default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
