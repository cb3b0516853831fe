"""Batch mode: an endpoint's calls sent through its provider's Batch API at the batch price.

`BatchChatClient` wraps an endpoint's `OpenAIChatClient` behind the same ChatClient interface, so
no stage changes: the calls a stage-shard's fan-out issues together (one MoA layer across all its
prompts, then the aggregations, then candidates, then verdicts) are collected until no new call has
arrived for `batch.quiet_s` (or `max_wait_s` after the first) and sent as one batch, split at
`max_requests` / `max_bytes`, through the provider's own Batch API (moaa.models.batch_apis: OpenAI's,
Together's, Anthropic's Message Batches, Gemini's batch mode; `batch.api`, by default told by the
base URL's host). The batch is polled until it ends, then its answers are read.

Each request's `custom_id` is a hash of its chat body, and every batch's id, input file, submission
time and custom_ids are saved in the shard folder (`batches/<endpoint>/state.json`, with the input
lines: request bodies only, never the key) before and after it is created; a process that is killed,
and the same command run later, find the same calls there and poll the same batch instead of paying
for it twice (a batch created but not yet recorded is found again by its metadata, input file or
display name; Anthropic's, which carry none, by their request count and creation time). A batch that
expires, is cancelled or fails, and any request it did not answer (an error line, a missing line, an
empty answer), is asked online through the wrapped client (its retries and failure rules); a 400
fails the call as online. The answers go back through the request cache like online ones; cost is
recorded at the batch price. An answer of a shape the provider does not document stops the run with
one line naming the provider and what was off (moaa.models.batch_apis.BatchShapeError).

This module, moaa.models.batch_apis and moaa.models.client are the code that talks HTTP to model servers.
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
from moaa.errors import EndpointError
from moaa.models.batch_apis import TERMINAL, BatchAPI, BatchShapeError, BatchView, build_api, provider_for
from moaa.models.client import CallError, Completion, OpenAIChatClient, parse_completion
from moaa.models.endpoint_client import EndpointClient

log = logging.getLogger(__name__)


def batch_enabled(config: MoaaConfig, name: str) -> bool:
    """Whether endpoint `name` sends its calls as batches (its own switch, or run.batch for any
    remote endpoint)."""
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
        """Save a batch's input lines and ids before it is sent (a kill after sending finds it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{local}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        self.batches[local] = {
            "id": None,
            "status": "submitting",
            "custom_ids": custom_ids,
            "submitted_at": time.time(),
        }
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


class BatchChatClient(EndpointClient):
    """A ChatClient that answers an endpoint's calls through its Batch API (module docstring)."""

    def __init__(self, inner: OpenAIChatClient, folder: Path):
        self.inner = inner
        self.name, self.model, self.endpoint, self.stats = inner.name, inner.model, inner.endpoint, inner.stats
        self.settings = inner.endpoint.batch
        self.price_factor = self.settings.price_factor
        self.batch_url = self.settings.base_url or inner.endpoint.base_urls()[0]
        self.provider = provider_for(self.settings.api, self.batch_url)
        self.store = BatchStore(Path(folder) / "batches" / re.sub(r"[^A-Za-z0-9_.-]", "_", inner.name))
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[str | None]]] = {}
        self._first = self._last = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._results: dict[str, asyncio.Task[dict[str, dict]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._api: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------ the ChatClient interface

    # chat(): EndpointClient's (the sampling merge, and n>1 with its fallback to separate calls)

    def _honours_n(self) -> bool | None:
        # Anthropic's and Gemini's batch requests carry one answer each
        return False if self.endpoint.supports_n is False or self.provider in ("anthropic", "gemini") else None

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

    async def _answer(self, messages, params: Sampling, n: int, fmt, tag: str) -> Completion:
        body = self.inner.request_body(messages, params, n, fmt)
        cid = custom_id(body)
        start = time.perf_counter()
        local = self.store.owner.get(cid) or await self._enqueue(cid, body)
        lines = await self._outcome(local) if local else {}
        response = lines.get(cid) or {}  # {"status_code", "body"} (moaa.models.batch_apis: every provider's)
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
        api = self._client()
        limit = min(self.settings.max_bytes, api.max_bytes)  # the provider's own cap (Gemini inlined: 20 MB)
        chunks: list[list[tuple[str, str, asyncio.Future]]] = [[]]
        size = 0
        for cid, (body, future) in pending.items():
            line = json.dumps(api.input_line(cid, body), ensure_ascii=False)
            full = len(chunks[-1]) >= self.settings.max_requests or size + len(line) + 1 > limit
            if chunks[-1] and full:
                chunks.append([])
                size = 0
            chunks[-1].append((cid, line, future))
            size += len(line.encode()) + 1
        return [c for c in chunks if c]

    async def _submit(self, chunk: list[tuple[str, str, asyncio.Future]]) -> None:
        local = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.store.add(local, [line for _, line, _ in chunk], [cid for cid, _, _ in chunk])
        api, failure = self._client(), None
        try:
            data = "".join(line + "\n" for _, line, _ in chunk).encode()
            upload = await api.upload(local, data)
            self.store.update(local, input_file_id=upload or None)
            view = await api.create(local, upload, [json.loads(line) for _, line, _ in chunk])
        except BatchShapeError as exc:  # it may have been created: going online could pay twice
            failure, local = exc, None
        except Exception as exc:  # noqa: BLE001 - every call of the chunk is asked online instead
            log.warning("endpoint %s: batch not sent (%s); its %d calls go online", self.name, _reason(exc), len(chunk))
            self.store.forget(local)
            local = None
        else:
            self.store.update(local, id=view.id, status=view.status)
            self._note(local, view)
            log.info("endpoint %s: %s batch %s sent with %d requests", self.name, api.name, view.id, len(chunk))
        for _, _, future in chunk:
            if not future.done():
                if failure is not None:
                    future.set_exception(failure)
                else:
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
        failures = 0
        while True:
            try:
                view = await api.retrieve(batch_id)
            except BatchShapeError:
                raise
            except Exception as exc:  # noqa: BLE001 - a poll that failed is tried again, then the run stops
                failures += 1
                if failures > self.endpoint.max_retries:
                    raise EndpointError(
                        f"endpoint '{self.name}': the {api.name} Batch API did not answer for batch {batch_id} "
                        f"({_reason(exc)}); run the same command again to go on polling it"
                    ) from None
                await asyncio.sleep(self.settings.poll_s)
                continue
            failures = 0
            self.store.update(local, status=view.status, counts=view.counts)
            self._note(local, view)
            if view.status in TERMINAL:
                break
            await asyncio.sleep(self.settings.poll_s)
        if view.status != "completed":
            log.warning("endpoint %s: batch %s ended %s; unanswered calls go online", self.name, batch_id, view.status)
        return await api.results(view)

    async def _recover(self, local: str) -> str | None:
        """The id of a batch created by a process killed before it saved the id."""
        saved = self.store.batches[local]
        view = await self._client().find(
            local, saved.get("input_file_id"), float(saved.get("submitted_at") or 0), saved["custom_ids"]
        )
        if view is None:
            return None
        self.store.update(local, id=view.id, status=view.status)
        return view.id

    # ------------------------------------------------------------ plumbing

    def _note(self, local: str, view: BatchView) -> None:
        """The batch's state for the progress display."""
        self.stats.note_batch(f"{self.name}/{local}", {"endpoint": self.name, "status": view.status, **view.counts})

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _client(self) -> BatchAPI:
        loop = asyncio.get_running_loop()
        api = self._api.get(loop)
        if api is None:
            key = resolve_api_key(self.name, self.endpoint)
            api = self._api[loop] = build_api(
                self.provider, self.batch_url, key, self.endpoint.timeout_s, self.settings, self.model
            )
        return api


def _reason(exc: BaseException) -> str:
    """An HTTP fault in a few words, scrubbed (a server may echo the request)."""
    from moaa.public import scrub_text

    response = getattr(exc, "response", None)
    if response is not None:
        return scrub_text(f"HTTP {response.status_code} {response.text[:200]}")
    return scrub_text(f"{type(exc).__name__}: {exc}")[:300]


def batch_price_factor(endpoint: EndpointConfig) -> float:
    return endpoint.batch.price_factor
