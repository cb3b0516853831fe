"""Batch mode: an endpoint's calls sent through the OpenAI Batch API shape at the batch price.

`BatchChatClient` wraps an endpoint's `OpenAIChatClient` behind the same ChatClient interface, so
no stage changes: the calls a stage-shard's fan-out issues together (one MoA layer across all its
prompts, then the aggregations, then candidates, then verdicts) are collected until no new call has
arrived for `batch.quiet_s` (or `max_wait_s` after the first), written as JSONL (request bodies
only, never the key), uploaded (`POST /files`, purpose batch), and sent as one batch
(`POST /batches`), split at `max_requests` / `max_bytes`. The batch is polled (`GET /batches/{id}`)
until it ends, then its output and error files are read (`GET /files/{id}/content`).

Each request's `custom_id` is a hash of its body, and every batch's id, input file and custom_ids
are saved in the shard folder (`batches/<endpoint>/state.json`) before and after it is created; a
process that is killed, and the same command run later, find the same calls there and poll the
same batch instead of paying for it twice. A batch that expires, is cancelled or fails, and any
request it did not answer (an error line, a missing line, an empty answer), is asked online
through the wrapped client (its retries and failure rules); a 400 fails the call as online. The
answers go back through the request cache like online ones; cost is recorded at the batch price.

This module and moaa.models.client are the only code that talks HTTP to model servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

from moaa.config import EndpointConfig, MoaaConfig, Sampling, resolve_api_key
from moaa.models.client import CallError, Completion, Message, OpenAIChatClient, join_completions, parse_completion

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")
CHAT_URL = "/v1/chat/completions"


def batch_enabled(config: MoaaConfig, name: str) -> bool:
    """Whether endpoint `name` sends its calls as batches (its own switch, or run.batch for any
    remote OpenAI-compatible endpoint)."""
    ep = config.endpoints[name]
    if ep.local or ep.backend != "openai":
        return False
    return ep.batch.enabled or config.run.batch


def custom_id(body: dict[str, Any]) -> str:
    """A request's id in a batch: the same body always gets the same id (a re-run finds its batch)."""
    return "moaa-" + hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:40]


class BatchStore:
    """The batches of one endpoint in one shard folder: {local id: {id, input_file_id, status,
    counts, custom_ids}} in `state.json`, rewritten whole (write, then rename) on every change."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "state.json"
        self.batches: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.batches = json.loads(self.path.read_text(encoding="utf-8")).get("batches", {})
        self.owner = {cid: local for local, b in self.batches.items() for cid in b["custom_ids"]}

    def add(self, local: str, lines: list[str], custom_ids: list[str]) -> None:
        """Save a batch's input file and ids before it is sent (a kill after sending finds it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{local}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self.batches[local] = {"id": None, "status": "submitting", "custom_ids": custom_ids}
        self.owner.update(dict.fromkeys(custom_ids, local))
        self.save()

    def update(self, local: str, **fields: Any) -> None:
        self.batches[local].update(fields)
        self.save()

    def forget(self, local: str) -> None:
        """A batch that was never created: its calls are asked again (in a new batch or online)."""
        for cid in self.batches.pop(local, {}).get("custom_ids", []):
            self.owner.pop(cid, None)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"batches": self.batches}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


class BatchChatClient:
    """A ChatClient that answers an endpoint's calls through its Batch API (module docstring)."""

    def __init__(self, inner: OpenAIChatClient, folder: Path):
        self.inner = inner
        self.name, self.model, self.endpoint, self.stats = inner.name, inner.model, inner.endpoint, inner.stats
        self.settings = inner.endpoint.batch
        self.price_factor = self.settings.price_factor
        self.store = BatchStore(Path(folder) / "batches" / re.sub(r"[^A-Za-z0-9_.-]", "_", inner.name))
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[str | None]]] = {}
        self._first = self._last = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._results: dict[str, asyncio.Task[dict[str, dict]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._api: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------ the ChatClient interface

    async def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        *,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        tag: str = "",
    ) -> Completion:
        params = (sampling or Sampling()).over(self.endpoint.sampling)
        if n > 1 and self.endpoint.supports_n is False:
            return await self._separate(messages, params, n, 0, response_format, tag)
        first = await self._one(messages, params, n, response_format, tag)
        if n > 1 and len(first.texts) < n:  # a server that ignores n: the rest as separate seeded calls
            rest = await self._separate(messages, params, n - len(first.texts), len(first.texts), response_format, tag)
            return join_completions([first, rest])
        return first

    async def aclose(self) -> None:
        """Stop collecting and polling (saved batches are polled again by the next run)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        api = self._api.pop(asyncio.get_running_loop(), None)
        if api is not None:
            await api.close()
        await self.inner.aclose()

    # ------------------------------------------------------------ one call

    async def _separate(self, messages, params: Sampling, count: int, offset: int, fmt, tag: str) -> Completion:
        base = params.seed or 0
        calls = [
            self._one(messages, params.model_copy(update={"seed": base + offset + i}), 1, fmt, tag)
            for i in range(count)
        ]
        return join_completions(list(await asyncio.gather(*calls)))

    async def _one(self, messages, params: Sampling, n: int, fmt, tag: str) -> Completion:
        body = self.inner.request_body(messages, params, n, fmt)
        cid = custom_id(body)
        start = time.perf_counter()
        local = self.store.owner.get(cid) or await self._enqueue(cid, body)
        lines = await self._outcome(local) if local else {}
        line = lines.get(cid)
        response = (line or {}).get("response") or {}
        status = response.get("status_code")
        if status == 200:
            try:
                done = parse_completion(response.get("body"), self.name, self.model, time.perf_counter() - start,
                                        keep_reasoning=self.endpoint.keep_reasoning)  # fmt: skip
            except ValueError:
                done = None
            if done is not None and any(t.strip() for t in done.texts):
                self.inner._account(done, tag, self.price_factor, batched=1, requests=1)
                return done
        if status == 400:
            self.stats.record(self.name, tag, requests=1, failures=1)
            detail = ((response.get("body") or {}).get("error") or {}).get("message", "bad request")
            raise CallError("bad_request", f"endpoint '{self.name}' ({self.model}) in a batch: HTTP 400 {detail}")
        log.info("endpoint %s: a batch left a call unanswered (%s): asking it online", self.name, status or "no line")
        return await self.inner.chat(messages, params, n=n, response_format=fmt, tag=tag)

    # ------------------------------------------------------------ collecting and sending

    async def _enqueue(self, cid: str, body: dict[str, Any]) -> str | None:
        """Wait for the batch that carries this call to be created; its local id (None: not sent)."""
        if cid not in self._pending:
            future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._pending[cid] = (body, future)
        now = time.monotonic()
        self._first = self._first if len(self._pending) > 1 else now
        self._last = now
        if self._flusher is None or self._flusher.done():
            self._flusher = self._spawn(self._collect())
        return await asyncio.shield(self._pending[cid][1])

    async def _collect(self) -> None:
        """Send what is pending once no call has arrived for quiet_s (or max_wait_s has passed)."""
        while self._pending:
            now = time.monotonic()
            due = min(self._last + self.settings.quiet_s, self._first + self.settings.max_wait_s)
            if now < due and len(self._pending) < self.settings.max_requests:
                await asyncio.sleep(due - now)
                continue
            pending, self._pending = self._pending, {}
            for chunk in self._chunks(pending):
                await self._submit(chunk)

    def _chunks(self, pending: dict[str, tuple[dict, asyncio.Future]]) -> list[list[tuple[str, str, asyncio.Future]]]:
        """Pending calls as batch input lines, split at the provider's request and size limits."""
        chunks: list[list[tuple[str, str, asyncio.Future]]] = [[]]
        size = 0
        for cid, (body, future) in pending.items():
            line = json.dumps({"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body}, ensure_ascii=False)
            full = len(chunks[-1]) >= self.settings.max_requests or size + len(line) + 1 > self.settings.max_bytes
            if chunks[-1] and full:
                chunks.append([])
                size = 0
            chunks[-1].append((cid, line, future))
            size += len(line.encode()) + 1
        return [c for c in chunks if c]

    async def _submit(self, chunk: list[tuple[str, str, asyncio.Future]]) -> None:
        local = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.store.add(local, [line for _, line, _ in chunk], [cid for cid, _, _ in chunk])
        try:
            api = self._client()
            data = "".join(line + "\n" for _, line, _ in chunk).encode()
            upload = await api.files.create(file=(f"{local}.jsonl", data), purpose=self.settings.file_purpose)
            batch = await api.batches.create(
                input_file_id=upload.id, endpoint=CHAT_URL, completion_window=self.settings.completion_window,
                metadata={"moaa_batch": local},
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - every call of the chunk is asked online instead
            log.warning("endpoint %s: batch not sent (%s); its %d calls go online", self.name, exc, len(chunk))
            self.store.forget(local)
            local = None
        else:
            self.store.update(local, id=batch.id, input_file_id=upload.id, status=batch.status)
            self._note(local, batch)
            log.info("endpoint %s: batch %s sent with %d requests", self.name, batch.id, len(chunk))
        for _, _, future in chunk:
            if not future.done():
                future.set_result(local)

    # ------------------------------------------------------------ polling

    def _outcome(self, local: str) -> asyncio.Task[dict[str, dict]]:
        """The batch's result lines by custom_id, polled once however many calls wait for it."""
        task = self._results.get(local)
        if task is None:
            task = self._results[local] = self._spawn(self._poll(local))
        return task

    async def _poll(self, local: str) -> dict[str, dict]:
        api = self._client()
        batch_id = self.store.batches[local]["id"] or await self._recover(local)
        if batch_id is None:
            return {}  # never created: every call is asked online
        while True:
            batch = await api.batches.retrieve(batch_id)
            self.store.update(local, status=batch.status, counts=_counts(batch))
            self._note(local, batch)
            if batch.status in TERMINAL:
                break
            await asyncio.sleep(self.settings.poll_s)
        if batch.status != "completed":
            log.warning("endpoint %s: batch %s ended %s; unanswered calls go online", self.name, batch_id, batch.status)
        lines: dict[str, dict] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await api.files.content(file_id)
                for text in content.text.splitlines():
                    if text.strip():
                        record = json.loads(text)
                        lines[record.get("custom_id")] = record
        return lines

    async def _recover(self, local: str) -> str | None:
        """The id of a batch created by a process killed before it saved the id (by its metadata)."""
        async for batch in self._client().batches.list(limit=100):
            if (batch.metadata or {}).get("moaa_batch") == local:
                self.store.update(local, id=batch.id, input_file_id=batch.input_file_id, status=batch.status)
                return batch.id
        return None

    # ------------------------------------------------------------ plumbing

    def _note(self, local: str, batch: Any) -> None:
        """The batch's state for the progress display."""
        counts = _counts(batch)
        self.stats.note_batch(f"{self.name}/{local}", {"endpoint": self.name, "status": batch.status, **counts})

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        api = self._api.get(loop)
        if api is None:
            from openai import AsyncOpenAI

            key = resolve_api_key(self.name, self.endpoint)
            api = self._api[loop] = AsyncOpenAI(
                base_url=self.endpoint.base_urls()[0], api_key=key, max_retries=self.endpoint.max_retries,
                timeout=self.endpoint.timeout_s,
            )  # fmt: skip
        return api


def _counts(batch: Any) -> dict[str, int]:
    counts = getattr(batch, "request_counts", None)
    return {k: int(getattr(counts, k, 0) or 0) for k in ("total", "completed", "failed")}


def batch_price_factor(endpoint: EndpointConfig) -> float:
    return endpoint.batch.price_factor
