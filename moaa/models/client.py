"""The model seam: an async chat-client interface and its OpenAI-compatible implementation.

`OpenAIChatClient` is the only code in moaa that talks HTTP. It adds what a long paid run needs:
bounded, adaptive concurrency and requests/tokens-per-minute buckets (moaa.models.limits), retries with
exponential backoff and jitter on 429/5xx/timeouts/connection errors/malformed bodies/empty answers,
fail-fast on 401/403/404 (fatal for the run) and 400 (fatal for the prompt), replicas balanced by load,
`n > 1` with a fallback to separate seeded calls where a server silently returns one choice
(llama.cpp does), and accounting of calls, tokens, latency and cost per endpoint and stage tag.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from moaa.config import EndpointConfig, Sampling, resolve_api_key
from moaa.errors import EndpointError
from moaa.models import transport
from moaa.models.endpoint_client import EndpointClient, join_completions
from moaa.models.limits import EndpointLimiter, shared_limiter
from moaa.models.request import (  # re-exported: callers import them from here
    Completion,
    Message,
    _Malformed,
    build_request_body,
    parse_completion,
    request_options,
    token_logprobs,
)

__all__ = [  # what callers import from here, some of it defined in moaa.models.request
    "CallError", "ChatClient", "Completion", "Message", "OpenAIChatClient", "build_request_body",
    "join_completions", "parse_completion", "request_options", "token_logprobs",
]  # fmt: skip
from moaa.models.stats import RunStats, call_cost

log = logging.getLogger(__name__)


class CallError(Exception):
    """A call that failed for good (retries spent, or a per-request 400); the prompt may fail."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind

    @property
    def transient(self) -> bool:
        """A re-run may get an answer (retries spent on 429/5xx/timeouts/...); a 400 will not."""
        return self.kind != "bad_request"


class ChatClient(Protocol):
    """What every stage needs from a model. Implementations: OpenAIChatClient, BatchChatClient,
    TransformersChatClient (moaa.models.endpoint_client.EndpointClient), CachedClient, fakes.

    `endpoint`: the config of the endpoint that answers (its sampling defaults, json_schema, prices);
    None only for a test fake that stands for no endpoint."""

    name: str
    model: str
    endpoint: EndpointConfig | None

    async def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        *,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        tag: str = "",
    ) -> Completion: ...


_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
NOTABLE_WAIT_S = 2.0  # a retry's wait at least this long is shown in the progress line (RunStats.note_wait)
_capped_warned: dict[str, float] = {}  # endpoint -> when its last capped Retry-After was logged
_n_support: dict[tuple, bool] = {}  # per process: (endpoint, urls, model) -> honours n?


class OpenAIChatClient(EndpointClient):
    # Builds the transport of one base URL: (base_url, api_key, timeout_s, ssl_context, max_connections).
    # A class attribute so that the benchmarks can run this client over another transport.
    transport_factory: Callable[..., transport.Transport] = transport.HTTPTransport

    def __init__(
        self,
        name: str,
        endpoint: EndpointConfig,
        stats: RunStats,
        api_key: str | None = None,
        limiter: EndpointLimiter | None = None,
    ):
        self.name = name
        self.model = endpoint.model
        self.endpoint = endpoint
        self.stats = stats
        self._api_key = api_key if api_key is not None else resolve_api_key(name, endpoint)
        self._urls = endpoint.base_urls()
        if not self._urls:
            raise EndpointError(f"endpoint '{name}': no base_url (is the local server running?)")
        key = (name, tuple(self._urls), endpoint.model)
        self._n_key = key
        if endpoint.supports_n is not None:
            _n_support.setdefault(key, endpoint.supports_n)
        self.limiter = limiter or shared_limiter(
            key, endpoint.max_concurrency, endpoint.requests_per_minute, endpoint.tokens_per_minute
        )
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = weakref.WeakKeyDictionary()
        self._in_flight = [0] * len(self._urls)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ public

    # chat(): EndpointClient's (the sampling merge, and n>1 with its fallback to separate calls)

    def _honours_n(self) -> bool | None:
        return _n_support.get(self._n_key)

    def _learned_n(self, got: int, n: int) -> None:
        if got < n and _n_support.get(self._n_key) is None:
            log.info("endpoint %s returned %d of %d choices: using separate calls", self.name, got, n)
        _n_support[self._n_key] = got >= n

    async def aclose(self) -> None:
        """Give back this client's references to the running loop's pools (the last one closes them)."""
        clients = self._per_loop.pop(asyncio.get_running_loop(), None) or []
        for client in clients:
            await transport.release_transport(client)

    # ------------------------------------------------------------ internals

    def _clients(self) -> list[transport.Transport]:
        """One transport (connection pool) per replica on the running loop, shared with every other
        client of the same endpoint there (the shards of a process share one loop and so one pool)."""
        loop = asyncio.get_running_loop()
        clients = self._per_loop.get(loop)
        if clients is None:
            # one TLS context per process: building one costs ~45 ms, once per shard otherwise
            clients = [
                transport.shared_transport(
                    loop,
                    url,
                    self._api_key,
                    self.endpoint.timeout_s,
                    _tls_context(),
                    self.endpoint.max_concurrency,
                    self.transport_factory,
                )
                for url in self._urls
            ]
            self._per_loop[loop] = clients
        return clients

    def _pick_replica(self) -> int:
        with self._lock:
            index = min(range(len(self._urls)), key=lambda i: (self._in_flight[i], random.random()))
            self._in_flight[index] += 1
            return index

    async def _answer(self, messages, params: Sampling, n: int, fmt, tag: str) -> Completion:
        body = self.request_body(messages, params, n, fmt)
        estimate = _estimate_tokens(messages, params)
        last = "unknown error"
        for attempt in range(self.endpoint.max_retries + 1):
            if attempt:
                self.stats.record(self.name, tag, retries=1)
            retry_after: float | None = None
            replica = self._pick_replica()
            http = self._clients()[replica]
            await self.limiter.acquire(estimate)
            start = time.perf_counter()
            try:
                self.stats.record(self.name, tag, requests=1)
                # Plain JSON in and out (moaa.models.transport): the SDK's typed request and reply
                # models cost more CPU per call than everything else moaa does with it.
                data = await http.post_json("/chat/completions", body)
                completion = self._completion(data, time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - classified below
                kind, retry_after, last = self._classify(exc)
                if kind == "connection" and self.endpoint.local:
                    self._raise_if_server_died(self._urls[replica])
                if kind == "rate_limited":
                    self.limiter.on_rate_limited(retry_after and min(retry_after, self.endpoint.max_retry_after_s))
                    self.stats.record(self.name, tag, rate_limited=1)
            else:
                self.limiter.on_success()
                self.limiter.charge_tokens(estimate, completion.prompt_tokens + completion.completion_tokens)
                self._account(completion, tag)
                # An empty answer is a transient fault (an overloaded server, a dropped generation):
                # asked again within the retry budget; the last one is returned and dropped upstream.
                # A content filter's empty answer is the provider's decision: asking again changes nothing.
                if (
                    any(t.strip() for t in completion.texts)
                    or "content_filter" in completion.finish_reasons
                    or attempt == self.endpoint.max_retries
                ):
                    return completion
                kind, last = "empty", "empty answer"
            finally:
                self.limiter.release()
                with self._lock:
                    self._in_flight[replica] -= 1
            if kind == "bad_request":
                break
            if attempt < self.endpoint.max_retries:
                await self._wait(attempt, retry_after, kind, last)
        self.stats.record(self.name, tag, failures=1)
        raise CallError(kind, f"endpoint '{self.name}' ({self.model}): {last}")

    def request_body(self, messages: list[Message], params: Sampling, n: int, fmt: dict | None) -> dict[str, Any]:
        """The JSON body of one chat completion request (what a batch file's line carries too)."""
        return build_request_body(self.endpoint, messages, params, n, fmt)

    def _raise_if_server_died(self, url: str) -> None:
        """A local server this process started and that has exited is run-fatal: no retry can
        bring it back, and a hundred "connection failed" lines would hide why."""
        from moaa.local.server import dead_server_message

        message = dead_server_message(url)
        if message is not None:
            raise EndpointError(f"endpoint '{self.name}': {message}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(30.0, self.endpoint.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return max(delay, min(retry_after or 0.0, self.endpoint.max_retry_after_s))

    async def _wait(self, attempt: int, retry_after: float | None, kind: str, last: str) -> None:
        """Back off before retry `attempt + 1`; a wait of seconds shows in the progress line
        ("waiting 58 s for endpoint X (HTTP 429, Retry-After 3600 s, capped at 60 s)")."""
        delay = self._backoff(attempt, retry_after)
        cause = " ".join(last.split()[:2]) if last.startswith("HTTP ") else kind
        cap = self.endpoint.max_retry_after_s
        if retry_after and retry_after > cap:
            reason = f"{cause}, Retry-After {retry_after:g} s, capped at {cap:g} s"
            self._warn_capped(retry_after, cause)
        elif retry_after:
            reason = f"{cause}, Retry-After {retry_after:g} s"
        else:
            reason = f"{cause}, retry {attempt + 1} of {self.endpoint.max_retries}"
        if delay >= NOTABLE_WAIT_S:
            self.stats.note_wait(self.name, delay, reason)
        await asyncio.sleep(delay)

    def _warn_capped(self, retry_after: float, cause: str) -> None:
        """One warning per endpoint per minute: a server asking for more than max_retry_after_s."""
        now = time.monotonic()
        if now - _capped_warned.get(self.name, -1e9) < 60:
            return
        _capped_warned[self.name] = now
        cap = self.endpoint.max_retry_after_s
        log.warning(
            "endpoint %s answered %s with Retry-After %g s; waiting %g s instead (endpoints.%s.max_retry_after_s), "
            "then retrying",
            self.name, cause, retry_after, cap, self.name,
        )  # fmt: skip

    def _classify(self, exc: Exception) -> tuple[str, float | None, str]:
        """(kind, retry_after, message); raises EndpointError for faults no retry can fix."""
        if isinstance(exc, transport.StatusError):
            status = exc.status_code
            detail = _error_detail(exc)
            if status in (401, 403):
                hint = (
                    f"check the key in ${self.endpoint.api_key_env}"
                    if self.endpoint.api_key_env
                    else f"set endpoints.{self.name}.api_key_env to the variable holding its key"
                )
                raise EndpointError(f"endpoint '{self.name}' refused the key (HTTP {status}): {hint}") from None
            if status == 404:
                raise EndpointError(
                    f"endpoint '{self.name}': HTTP 404 for model '{self.model}' at {self._urls[0]} "
                    f"({detail}); check base_url and model"
                ) from None
            if status == 429:
                return "rate_limited", _retry_after(exc), f"HTTP 429 {detail}"
            if status in _RETRYABLE_STATUS or status >= 500:
                return "server_error", _retry_after(exc), f"HTTP {status} {detail}"
            return "bad_request", None, f"HTTP {status} {detail}"
        if isinstance(exc, transport.Timeout):
            return "timeout", None, f"no answer within {self.endpoint.timeout_s:g}s"
        if isinstance(exc, transport.ConnectionFailed):
            return "connection", None, f"connection failed: {exc.__cause__ or exc}"
        if isinstance(exc, transport.BadBody):
            from moaa.public import scrub_text

            return "malformed", None, f"malformed response: {scrub_text(str(exc))}"
        if isinstance(exc, (json.JSONDecodeError, ValueError, TypeError, _Malformed)):
            return "malformed", None, f"malformed response: {str(exc)[:200]}"
        raise exc

    def _completion(self, data: Any, latency: float) -> Completion:
        return parse_completion(data, self.name, self.model, latency, keep_reasoning=self.endpoint.keep_reasoning)

    def _account(self, c: Completion, tag: str, price_factor: float = 1.0, **counts: int) -> None:
        """Record one answered call; `price_factor` < 1 for calls answered by a batch at its price."""
        empty = sum(1 for t in c.texts if not t.strip())
        truncated = sum(1 for r in c.finish_reasons if r == "length")
        if empty:
            log.warning("endpoint %s returned %d empty answer(s)", self.name, empty)
        cost = price_factor * call_cost(
            c.prompt_tokens,
            c.completion_tokens,
            self.endpoint.price_input_per_mtok,
            self.endpoint.price_output_per_mtok,
        )
        self.stats.record(
            self.name,
            tag,
            latency=c.latency_s,
            calls=1,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            reasoning_tokens=c.reasoning_tokens,
            cost=cost,
            empty=empty,
            truncated=truncated,
            latency_s=c.latency_s,
            **counts,
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The certificate store httpx would load (SSL_CERT_FILE / SSL_CERT_DIR, else certifi's)."""
    import certifi

    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def _estimate_tokens(messages: list[Message], p: Sampling) -> float:
    return sum(len(m.get("content") or "") for m in messages) / 4 + (p.max_tokens or 256)


def _retry_after(exc: Any) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_detail(exc: Any) -> str:
    """The server's error message, scrubbed: some servers echo the request's key in a 400 body."""
    from moaa.public import scrub_text

    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return scrub_text(str(err["message"]))[:200]
    return scrub_text(str(getattr(exc, "message", "") or ""))[:200]
