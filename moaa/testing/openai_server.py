"""A small, fast OpenAI-compatible test server that can inject faults (raw asyncio, no model).

Usage: python -m moaa.testing.openai_server --port 8000 --latency-ms 50 --fault-rate 0.1 \
    --faults 429,500,503,hang,garbage,empty --seed 0 --log requests.jsonl --ignore-n --api-key KEY
(prints ``READY <base_url>`` on stdout once listening; SIGTERM/SIGINT stop it). In-process:
``with OpenAITestServer(latency_s=0.01) as srv: AsyncOpenAI(base_url=srv.base_url, ...)``.

Endpoints: ``POST /v1/chat/completions`` (non-streaming), ``GET /v1/models``, ``GET /health``;
HTTP/1.1 keep-alive with Content-Length bodies only.

Options (constructor keyword / CLI flag):
- ``host``/``port`` (--host, --port): 127.0.0.1 and a free port by default.
- ``latency_s``, ``jitter_s`` (--latency-ms, --jitter-ms): every chat completion answer (faults
  included, except "hang") waits ``latency_s + uniform(0, jitter_s)`` with ``asyncio.sleep``.
- ``api_key`` (--api-key): when set, /v1/* needs ``Authorization: Bearer <key>``, else 401.
- ``ignore_n`` (--ignore-n): always one choice, whatever ``n`` asks (like llama.cpp).
- ``filler_words`` (--filler-words): words appended to each default reply.
- ``greedy`` (--greedy): at temperature 0 the default reply depends on the messages only, not on
  the seed (like greedy decoding): asking the same thing again gets the same answer.
- ``truncate_at_max_tokens``: a reply with more words than the request's ``max_tokens``
  (or ``max_completion_tokens``) is cut to that many words with finish_reason "length".
- ``responder(request_json) -> str | list[str] | Reply | None``: a str is the content of every choice,
  a list gives the choices one by one (its length wins over n), None uses the default reply; a
  ``moaa.testing.openai_replies.Reply`` is the content of every choice with its own tokens and
  their top log-probabilities (returned when the request asks for ``logprobs``).
  If it raises, the answer is a 500.
- ``script`` (--script 429,none,500): faults consumed in order, one per chat request (None or
  "none" = normal); while it is not empty it wins over the random faults.
- ``fault_rate``, ``fault_mix``, ``seed`` (--fault-rate, --faults, --seed): each chat request
  fails with probability fault_rate, with a kind drawn uniformly from fault_mix (seeded RNG).
- ``retry_after_s`` (--retry-after): the Retry-After header of "429" (may be fractional).
- ``hang_s`` (--hang-s): how long "hang" sleeps before closing the connection.
- ``log_path`` (--log): append every request record as a JSON line, flushed per line.
- ``models`` (--models): the ids that /v1/models lists.
- ``strict_models`` (--strict-models): a chat request for a model ``models`` does not list is
  answered 404 ``model_not_found``, as OpenAI answers one (by default any model is answered).
- ``refuse_params`` (--refuse-param NAME=MESSAGE): a chat request whose body holds NAME is answered
  400 with MESSAGE and ``param`` NAME, as OpenAI refuses ``max_tokens`` or ``temperature`` on its
  reasoning models.
- ``--replies instructions`` (CLI only): the responder moaa.testing.instruction_replies.instruction_responder,
  which plays instruction writers and their answerers.
- ``responder`` (--responder MODULE:NAME): as above; on the command line, the function to import.
- ``echo_key`` (--echo-key): a "400" fault's error message repeats the request's Authorization
  header, as some servers echo the request in their errors (to test that moaa writes no key).

Fault kinds (chat completions only; /health and /v1/models never fail): ``openai_replies.FAULT_KINDS``,
what each answers in that module's docstring. ``refuse(seconds)`` closes every connection and stops
listening for that long, then listens again on the same port.

Replies and usage counts: see ``moaa.testing.openai_replies`` (deterministic, word-based).

Request log (``server.requests``, and the file): ``{t: time.time() at arrival, path, status, fault,
body: parsed JSON or None, model}`` written on arrival; status is the one the server will answer
(None for "hang" and "drop"). Authentication is checked first: a 401 consumes no scripted fault.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from moaa.testing.openai_replies import (
    Answer,
    Responder,
    build_completion,
    check_fault_kind,
    error_body,
    fault_answer,
    faulted_completion,
)

logger = logging.getLogger(__name__)


class OpenAITestServer:
    """OpenAI-compatible server on raw asyncio streams; in-process (thread) or ``serve()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        api_key: str | None = None,
        ignore_n: bool = False,
        filler_words: int = 0,
        truncate_at_max_tokens: bool = True,
        greedy: bool = False,
        responder: Responder | None = None,
        script: Sequence[str | None] = (),
        fault_rate: float = 0.0,
        fault_mix: Sequence[str] = ("429", "500", "503"),
        seed: int = 0,
        retry_after_s: float = 1.0,
        hang_s: float = 600.0,
        log_path: str | None = None,
        models: Sequence[str] = ("test-model",),
        strict_models: bool = False,
        refuse_params: dict[str, str] | None = None,
        echo_key: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.latency_s, self.jitter_s, self.api_key, self.ignore_n = latency_s, jitter_s, api_key, ignore_n
        self.filler_words, self.truncate_at_max_tokens = filler_words, truncate_at_max_tokens
        self.greedy = greedy
        self.responder, self.fault_rate, self.fault_mix = responder, fault_rate, tuple(fault_mix)
        self.retry_after_s, self.hang_s, self.models = retry_after_s, hang_s, list(models)
        self.strict_models, self.refuse_params = strict_models, dict(refuse_params or {})
        self.echo_key = echo_key
        self.requests: list[dict] = []
        self._script: collections.deque[str | None] = collections.deque()
        self.set_script(script)
        for kind in self.fault_mix:
            check_fault_kind(kind)
        self._rng, self._jitter_rng = random.Random(seed), random.Random(seed + 1)
        self.log_path = log_path
        self._log: TextIO | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def set_script(self, faults: Sequence[str | None]) -> None:
        """Replace the scripted faults (consumed one per chat request, None = normal)."""
        kinds = [None if f in (None, "none", "") else check_fault_kind(f) for f in faults]
        self._script.clear()
        self._script.extend(kinds)

    def reset(self) -> None:
        """Clear the in-memory request log and the script (the log file is append-only)."""
        self.requests.clear()
        self._script.clear()

    # -- in-process mode: a background thread running its own event loop --------------------
    def start(self) -> OpenAITestServer:
        """Listen from a background thread; returns once the port is bound."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-test-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket, then end the thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None
        self._close_log()

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse(self, seconds: float) -> None:
        """Close all connections and refuse new ones for ``seconds``; returns once closed."""
        assert self._loop is not None, "refuse() needs a started in-process server"
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)

        def relisten() -> None:
            if self._server is None:
                asyncio.ensure_future(self._listen())

        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, relisten)

    # -- subprocess mode ----------------------------------------------------------------------
    async def serve(self, ready: Callable[[str], None] | None = None) -> None:
        """Listen until SIGTERM/SIGINT; ``ready(base_url)`` is called once listening."""
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await self._listen()
        if ready:
            ready(self.base_url)
        await stop.wait()
        await self._close()
        self._close_log()

    # -- the server itself --------------------------------------------------------------------
    async def _listen(self) -> None:
        if self.log_path and self._log is None:
            self._log = open(self.log_path, "a", encoding="utf-8")  # kept open: one flushed line per request
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target = head[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                keep = await self._answer(method, target.split("?")[0], headers, body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # client went away or sent something that is not HTTP/1.1: just close
        except asyncio.CancelledError:
            pass  # stop() or refuse()
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        """Log, then answer one request; False closes the connection."""
        record: dict[str, Any] = {"t": time.time(), "path": path, "status": 200, "fault": None}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record |= {"body": body, "model": body.get("model") if isinstance(body, dict) else None}
        extra: dict[str, str] = {}
        if path == "/health" and method == "GET":
            out = b'{"status":"ok"}'
        elif path.startswith("/v1/") and self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            record["status"], out = 401, error_body(401, "Incorrect API key provided.")
        elif path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "moaa-test"} for m in self.models]
            out = json.dumps({"object": "list", "data": data}).encode()
        elif path == "/v1/chat/completions" and method == "POST":
            fault = self._next_fault()
            record["fault"] = fault
            record["status"], out, extra = self._chat(body, fault, headers.get("authorization", ""))
        else:
            record["status"], out = 404, error_body(404, f"Unknown route {method} {path}.")
        self._record(record)
        if record["fault"] == "hang":
            await asyncio.sleep(self.hang_s)
            return False
        if path == "/v1/chat/completions" and (self.latency_s or self.jitter_s):
            await asyncio.sleep(self.latency_s + self._jitter_rng.uniform(0, self.jitter_s))
        if record["fault"] == "drop":
            return False
        status = record["status"]
        content_type = extra.pop("Content-Type", "application/json")
        head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        writer.write(f"{head}Content-Length: {len(out)}\r\n\r\n".encode() + out)
        await writer.drain()
        return True

    def _next_fault(self) -> str | None:
        if self._script:
            return self._script.popleft()
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.fault_mix)
        return None

    def _chat(self, body: Any, fault: str | None, auth: str = "") -> Answer:
        """(status, body bytes, extra headers) of a chat completion request under ``fault``."""
        early = fault_answer(fault, retry_after_s=self.retry_after_s, echo_key=self.echo_key, auth=auth)
        if early is not None:
            return early
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return 400, error_body(400, "The body must be a JSON object with a 'messages' list."), {}
        if self.strict_models and body.get("model") not in self.models:
            text = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            return 404, error_body(404, text, code="model_not_found"), {}
        refused = next((k for k in self.refuse_params if k in body), None)
        if refused is not None:
            return 400, error_body(400, self.refuse_params[refused], param=refused), {}
        self._counter += 1
        try:
            completion = build_completion(
                body,
                f"chatcmpl-test{self._counter}",
                responder=self.responder,
                ignore_n=self.ignore_n,
                filler_words=self.filler_words,
                truncate_at_max_tokens=self.truncate_at_max_tokens,
                greedy=self.greedy,
            )
            return faulted_completion(completion, fault)
        except Exception as exc:  # a failing test responder becomes a visible 500
            logger.exception("responder failed")
            return 500, error_body(500, f"responder failed: {exc!r}"), {}

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def _record(self, record: dict) -> None:
        self.requests.append(record)
        if self._log:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()


def _imported(spec: str) -> Responder:
    """The function `MODULE:NAME` names (a subprocess server's scripted replies, e.g. a judge's verdicts)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="OpenAI-compatible test server with fault injection.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--faults", default="429,500,503", help="comma-separated mix for --fault-rate")
    p.add_argument("--script", default="", help="comma-separated faults consumed in order (none = normal)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--hang-s", type=float, default=600.0)
    p.add_argument("--filler-words", type=int, default=0)
    p.add_argument("--log", default=None, help="append request records as JSON lines")
    p.add_argument("--ignore-n", action="store_true")
    p.add_argument("--greedy", action="store_true", help="at temperature 0 the reply ignores the seed")
    p.add_argument("--api-key", default=None)
    p.add_argument("--models", default="test-model", help="comma-separated ids for /v1/models")
    p.add_argument("--strict-models", action="store_true", help="answer 404 for a model --models does not list")
    p.add_argument(
        "--refuse-param", action="append", default=[], metavar="NAME=MESSAGE",
        help="answer 400 MESSAGE to a chat body holding NAME (repeatable)",
    )  # fmt: skip
    p.add_argument("--echo-key", action="store_true", help="a 400 fault's message repeats the Authorization header")
    p.add_argument(
        "--replies", choices=["default", "instructions"], default="default",
        help="instructions: play instruction writers and answerers (moaa.testing.instruction_replies)",
    )  # fmt: skip
    p.add_argument("--responder", default=None, metavar="MODULE:NAME", help="a responder function to import")
    a = p.parse_args(argv)
    responder = None
    if a.replies == "instructions":
        from moaa.testing.instruction_replies import instruction_responder as responder
    try:
        srv = OpenAITestServer(
            a.host,
            a.port,
            latency_s=a.latency_ms / 1000,
            jitter_s=a.jitter_ms / 1000,
            api_key=a.api_key,
            ignore_n=a.ignore_n,
            filler_words=a.filler_words,
            greedy=a.greedy,
            fault_rate=a.fault_rate,
            fault_mix=[f for f in a.faults.split(",") if f],
            script=[f for f in a.script.split(",") if f],
            seed=a.seed,
            retry_after_s=a.retry_after,
            hang_s=a.hang_s,
            log_path=a.log,
            models=a.models.split(","),
            strict_models=a.strict_models,
            refuse_params=dict(item.split("=", 1) for item in a.refuse_param),
            echo_key=a.echo_key,
            responder=_imported(a.responder) if a.responder else responder,
        )
    except ValueError as exc:
        p.error(str(exc))
    asyncio.run(srv.serve(lambda url: print(f"READY {url}", flush=True)))


if __name__ == "__main__":
    main()
