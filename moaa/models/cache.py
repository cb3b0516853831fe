"""A durable, content-addressed request cache in front of any ChatClient.

The key is a hash of everything that determines an answer: the model, the messages, the resolved
sampling parameters (seed included), n, the response format, and the call's tag, which carries
the version of the prompt template that built the messages. A re-run of a finished config
therefore makes no model calls; changing a judge re-asks only the judge; changing a proposer
re-asks it and everything downstream (their messages change).

Storage is SQLite in WAL mode, one connection per thread, one committed row per answer, so a
crash (SIGKILL included) loses at most the calls in flight. Several processes may share a file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from moaa.config import Sampling
from moaa.errors import MoaaError, storage_error
from moaa.models.client import ChatClient, Completion, Message, request_options
from moaa.models.stats import RunStats, call_cost
from moaa.public import scrub


class RequestCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._local = threading.local()
            self._conn().execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise MoaaError(f"cache {self.path}: cannot open ({exc}); set cache.path to a writable file") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            row = self._conn().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(f"cache {self.path}", exc, "cache.path") from None
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        # Disk full or read-only is run-fatal with one line (every later answer would be lost to
        # the cache too); the answers stored so far stay, so the same command resumes cheaply.
        try:
            self._conn().execute(
                "INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)",
                (key, json.dumps(value, ensure_ascii=False), time.time()),
            )
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(f"cache {self.path}", exc, "cache.path") from None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def request_key(
    model: str,
    messages: list[Message],
    params: Sampling,
    n: int,
    fmt: Any,
    tag: str,
    options: dict[str, Any] | None = None,
) -> str:
    """`options`: the endpoint's request settings that differ from their defaults (extra_body, the
    token-limit parameter, keep_reasoning: moaa.models.client.request_options)."""
    sampling = params.sampling_dict()
    for key in ("top_logprobs", "extra_body"):
        if sampling.get(key) is None:  # keys from before the field existed stay valid
            sampling.pop(key, None)
    payload = {
        "model": model,
        "messages": messages,
        "params": sampling,
        "n": n,
        "format": fmt,
        "template": tag,
    } | ({"options": options} if options else {})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class CachedClient:
    """Answers from the cache when it can, else asks `inner` and stores the answer."""

    def __init__(self, inner: ChatClient, cache: RequestCache, stats: RunStats):
        self.inner = inner
        self.cache = cache
        self.stats = stats
        self.name = inner.name
        self.model = inner.model
        endpoint = getattr(inner, "endpoint", None)
        self._defaults = endpoint.sampling if endpoint is not None else None
        self._prices = (endpoint.price_input_per_mtok, endpoint.price_output_per_mtok) if endpoint else (None, None)
        self._options = request_options(endpoint) if endpoint is not None else {}

    def _cost(self, hit: dict[str, Any]) -> float:
        # a batching client's answers were made at its batch price
        factor = getattr(self.inner, "price_factor", 1.0)
        return factor * call_cost(hit["prompt_tokens"], hit["completion_tokens"], *self._prices)

    async def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        *,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        tag: str = "",
    ) -> Completion:
        params = (sampling or Sampling()).over(self._defaults)
        key = request_key(self.model, messages, params, n, response_format, tag, self._options)
        hit = self.cache.get(key)
        if hit is not None and self.stats.take_prepaid(key):
            # Answered and counted by an attempt of this shard that was killed: the same call.
            return Completion(**hit | {"cached": True, "latency_s": 0.0})
        if hit is not None:
            self.stats.record(
                self.name,
                tag,
                calls=1,
                cache_hits=1,
                prompt_tokens=hit["prompt_tokens"],
                completion_tokens=hit["completion_tokens"],
                cached_cost=self._cost(hit),  # the data still cost this to make, even if this run paid nothing
            )
            return Completion(**hit | {"cached": True, "latency_s": 0.0})
        completion = await self.inner.chat(messages, params, n=n, response_format=response_format, tag=tag)
        if all(t.strip() for t in completion.texts):  # never pin an empty answer
            self.stats.note_paid(key)  # before the put: a kill between them re-asks, never undercounts
            stored = {k: v for k, v in vars(completion).items() if k not in ("cached", "extra")}
            self.cache.put(key, scrub(stored))  # a server may echo the key in an answer
        return completion
