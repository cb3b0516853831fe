"""The Batch APIs moaa speaks, each behind one small interface (`BatchAPI`), over plain HTTP (httpx).

moaa.models.batch collects a shard's calls and saves them; this module sends them and reads the
answers back in one normalised form, whatever the provider:

- `openai`: OpenAI's shape (platform.openai.com/docs/api-reference/batch): `POST /files` (purpose
  batch), `POST /batches`, `GET /batches/{id}`, output and error files of
  `{"custom_id", "response": {"status_code", "body"}}` lines.
- `together`: Together's (its OpenAPI spec, github.com/togethercomputer/openapi): upload at
  `POST /files/upload` (file, file_name, purpose batch-api), input lines `{"custom_id", "body"}`,
  create answers 201 `{"job": {...}, "warning"}`, statuses in capitals (VALIDATING, IN_PROGRESS,
  COMPLETED, FAILED, EXPIRED, CANCELLED), `GET /batches` a bare array, `progress` 0-100.
- `anthropic`: Anthropic's Message Batches (docs.anthropic.com, Message Batches API): `POST
  /v1/messages/batches` with `{"requests": [{"custom_id", "params"}]}` (Messages API parameters:
  the chat body translated), `processing_status` in_progress / canceling / ended, results at
  `results_url` as `{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}`;
  keys in `x-api-key`.
- `gemini`: the Gemini API's batch mode (ai.google.dev/gemini-api/docs/batch-api): `POST
  /v1beta/models/{model}:batchGenerateContent` with inlined GenerateContentRequests keyed by
  metadata, an Operation whose `metadata.state` is BATCH_STATE_PENDING / RUNNING / SUCCEEDED /
  FAILED / CANCELLED / EXPIRED and whose `response.inlinedResponses` hold the answers; keys in
  `x-goog-api-key`. Inlined requests only (20 MB per batch: `batch.max_bytes`).

Every view is normalised to OpenAI's status words (validating, in_progress, finalizing, completed,
failed, expired, cancelling, cancelled) and every result line to `{"status_code", "body"}` with the
body a chat completion, so the batch client reads one shape. An answer of another shape than the
provider documents raises `BatchShapeError`: one line naming the provider, the request and what was
missing, which the run reports instead of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from moaa.errors import EndpointError
from moaa.models.batch_shapes import anthropic_completion, anthropic_params, gemini_completion, gemini_request

CHAT_URL = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
PROVIDERS = ("openai", "together", "anthropic", "gemini")
_HOSTS = {"api.together.ai": "together", "api.together.xyz": "together", "api.anthropic.com": "anthropic",
          "generativelanguage.googleapis.com": "gemini"}  # fmt: skip


class BatchShapeError(EndpointError):
    """A Batch API answered in a shape moaa does not know (one line: provider, request, what is off)."""


def provider_for(setting: str, base_url: str) -> str:
    """The Batch API of an endpoint: `batch.api`, or for `auto` the one its base URL's host runs."""
    if setting != "auto":
        return setting
    return _HOSTS.get(urlsplit(base_url).hostname or "", "openai")


@dataclass
class BatchView:
    """A batch as the provider reports it, in OpenAI's status words and counts."""

    id: str
    status: str
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    raw: dict[str, Any] = field(default_factory=dict)


class BatchAPI:
    """One provider's Batch API for one endpoint (base class: the HTTP, the errors, the shape checks)."""

    name = "openai"
    supports_n = True
    max_bytes = 200_000_000  # what one batch may hold; batch.max_bytes lowers it, never raises it

    def __init__(self, base_url: str, api_key: str, timeout_s: float, settings: Any):
        import httpx

        self.base_url, self.settings = base_url.rstrip("/"), settings
        self.http = httpx.AsyncClient(timeout=timeout_s, headers=self.headers(api_key))

    def headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """The parsed JSON answer (text for `what` ending in 'content'); HTTP errors raise httpx's."""
        url = path if path.startswith("http") else self.base_url + path
        resp = await self.http.request(method, url, **kwargs)
        resp.raise_for_status()
        if what.endswith("content"):
            return resp.text
        try:
            return resp.json()
        except ValueError:
            raise self.shape(what, f"a body that is not JSON ({resp.headers.get('content-type', '?')})") from None

    def shape(self, what: str, problem: str) -> BatchShapeError:
        return BatchShapeError(
            f"the {self.name} Batch API answered {what} with {problem}; moaa cannot follow this batch: check "
            f"batch.api ({self.name}) and base_url, or turn batch off"
        )

    def field(self, data: Any, key: str, what: str) -> Any:
        if not isinstance(data, dict) or key not in data:
            kind = f"keys {sorted(data)[:8]}" if isinstance(data, dict) else type(data).__name__
            raise self.shape(what, f"no '{key}' ({kind})")
        return data[key]

    # -- the interface (OpenAI's shape) ---------------------------------------------------------
    def input_line(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body}

    async def upload(self, local: str, data: bytes) -> str:
        files = {"file": (f"{local}.jsonl", data, "application/jsonl")}
        answer = await self.request("POST", "/files", "POST /files", files=files,
                                    data={"purpose": self.settings.file_purpose})  # fmt: skip
        return str(self.field(answer, "id", "POST /files"))

    async def create(self, local: str, input_file_id: str, lines: list[dict[str, Any]]) -> BatchView:
        body = {"input_file_id": input_file_id, "endpoint": CHAT_URL,
                "completion_window": self.settings.completion_window, "metadata": {"moaa_batch": local}}  # fmt: skip
        return self.view(await self.request("POST", "/batches", "POST /batches", json=body), "POST /batches")

    async def retrieve(self, batch_id: str) -> BatchView:
        what = f"GET /batches/{batch_id}"
        return self.view(await self.request("GET", f"/batches/{batch_id}", what), what)

    async def find(self, local: str, input_file_id: str | None, since: float, ids: list[str]) -> BatchView | None:
        """The batch a killed process created but did not record: by its metadata or input file."""
        answer = await self.request("GET", "/batches", "GET /batches", params={"limit": 100})
        for item in self.listed(answer):
            if (item.get("metadata") or {}).get("moaa_batch") == local or (
                input_file_id and item.get("input_file_id") == input_file_id
            ):
                return self.view(item, "GET /batches")
        return None

    def listed(self, answer: Any) -> list[dict[str, Any]]:
        return list(self.field(answer, "data", "GET /batches"))

    async def probe(self) -> None:
        """List the account's batches once (what `moaa check` asks): raises on a refused key, a
        wrong root or an undocumented shape."""
        self.listed(await self.request("GET", "/batches", "GET /batches", params={"limit": 1}))

    def view(self, data: Any, what: str) -> BatchView:
        counts = data.get("request_counts") or {} if isinstance(data, dict) else {}
        return BatchView(
            str(self.field(data, "id", what)), str(self.field(data, "status", what)).lower(),
            {k: int(counts.get(k) or 0) for k in ("total", "completed", "failed")}, data,
        )  # fmt: skip

    async def results(self, view: BatchView) -> dict[str, dict[str, Any]]:
        """{custom_id: {"status_code", "body"}} of an ended batch (its output and error files)."""
        lines: dict[str, dict[str, Any]] = {}
        for key in ("output_file_id", "error_file_id"):
            file_id = view.raw.get(key)
            if not file_id:
                continue
            what = f"GET /files/{file_id}/content"
            for text in (await self.request("GET", f"/files/{file_id}/content", what)).splitlines():
                if text.strip():
                    record = _json(text, self, what)
                    response = record.get("response") or {}
                    body = response.get("body")
                    status = response.get("status_code") or (
                        200 if isinstance(body, dict) and "choices" in body else None
                    )
                    lines[str(self.field(record, "custom_id", what))] = {"status_code": status, "body": body}
        return lines


class TogetherBatchAPI(BatchAPI):
    """Together's Batch API: OpenAI's idea in its own shapes (module docstring)."""

    name = "together"
    max_bytes = 100_000_000

    def input_line(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": cid, "body": body}

    async def upload(self, local: str, data: bytes) -> str:
        files = {"file": (f"{local}.jsonl", data, "application/jsonl")}
        form = {"purpose": self.settings.file_purpose, "file_name": f"{local}.jsonl", "file_type": "jsonl"}
        answer = await self.request("POST", "/files/upload", "POST /files/upload", files=files, data=form)
        return str(self.field(answer, "id", "POST /files/upload"))

    async def create(self, local: str, input_file_id: str, lines: list[dict[str, Any]]) -> BatchView:
        body = {
            "input_file_id": input_file_id,
            "endpoint": CHAT_URL,
            "completion_window": self.settings.completion_window,
        }
        answer = await self.request("POST", "/batches", "POST /batches", json=body)
        return self.view(self.field(answer, "job", "POST /batches"), "POST /batches")

    def listed(self, answer: Any) -> list[dict[str, Any]]:
        if not isinstance(answer, list):
            raise self.shape("GET /batches", f"a {type(answer).__name__}, not the documented array")
        return answer

    def view(self, data: Any, what: str) -> BatchView:
        status = str(self.field(data, "status", what)).lower()
        counts = {"total": 0, "completed": 0, "failed": 0}  # Together reports a progress percentage, not counts
        return BatchView(str(self.field(data, "id", what)), status, counts, data)


class AnthropicBatchAPI(BatchAPI):
    """Anthropic's Message Batches: the chat bodies as Messages API params (module docstring)."""

    name = "anthropic"
    supports_n = False
    max_bytes = 256_000_000

    def headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": "2023-06-01"}

    def input_line(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": cid, "params": anthropic_params(body)}

    async def upload(self, local: str, data: bytes) -> str:
        return ""  # the requests travel in the create call itself

    async def create(self, local: str, input_file_id: str, lines: list[dict[str, Any]]) -> BatchView:
        answer = await self.request("POST", "/messages/batches", "POST /messages/batches", json={"requests": lines})
        return self.view(answer, "POST /messages/batches")

    async def retrieve(self, batch_id: str) -> BatchView:
        what = f"GET /messages/batches/{batch_id}"
        return self.view(await self.request("GET", f"/messages/batches/{batch_id}", what), what)

    async def probe(self) -> None:
        self.field(await self.request("GET", "/messages/batches", "GET /messages/batches", params={"limit": 1}),
                   "data", "GET /messages/batches")  # fmt: skip

    async def find(self, local: str, input_file_id: str | None, since: float, ids: list[str]) -> BatchView | None:
        """Message Batches carry no metadata: the batch of as many requests created since the local
        batch was saved; when several are (another shard's, sent at the same time), the one whose
        results hold these custom_ids, once they have ended."""
        import asyncio

        what = "GET /messages/batches"
        answer = await self.request("GET", "/messages/batches", what, params={"limit": 100})
        views = [self.view(item, what) for item in self.field(answer, "data", what)]
        found = [v for v in views if _epoch(v.raw.get("created_at")) >= since - 60 and v.counts["total"] == len(ids)]
        if len(found) <= 1:
            return found[0] if found else None
        while not all(v.status in TERMINAL for v in found):
            await asyncio.sleep(self.settings.poll_s)
            found = [await self.retrieve(v.id) for v in found]
        for view in found:
            if set(ids) <= set(await self.results(view)):
                return view
        return None

    def view(self, data: Any, what: str) -> BatchView:
        state = str(self.field(data, "processing_status", what))
        counts = self.field(data, "request_counts", what)
        if not isinstance(counts, dict):
            raise self.shape(what, f"request_counts of type {type(counts).__name__}")
        total = sum(int(counts.get(k) or 0) for k in ("processing", "succeeded", "errored", "canceled", "expired"))
        status = {"in_progress": "in_progress", "canceling": "cancelling", "ended": "completed"}.get(state)
        if status is None:
            raise self.shape(what, f"processing_status {state!r}")
        done = {
            "total": total,
            "completed": int(counts.get("succeeded") or 0),
            "failed": int(counts.get("errored") or 0),
        }
        return BatchView(str(self.field(data, "id", what)), status, done, data)

    async def results(self, view: BatchView) -> dict[str, dict[str, Any]]:
        url = view.raw.get("results_url") or f"/messages/batches/{view.id}/results"
        what = f"GET /messages/batches/{view.id}/results content"
        lines: dict[str, dict[str, Any]] = {}
        for text in (await self.request("GET", url, what)).splitlines():
            if not text.strip():
                continue
            record = _json(text, self, what)
            result = self.field(record, "result", what)
            kind = self.field(result, "type", what)
            if kind == "succeeded":
                entry = {"status_code": 200, "body": anthropic_completion(self.field(result, "message", what), self)}
            elif kind == "errored":
                error = (result.get("error") or {}).get("error") or result.get("error") or {}
                status = 400 if error.get("type") == "invalid_request_error" else 500
                entry = {"status_code": status, "body": {"error": {"message": error.get("message", "errored")}}}
            else:  # canceled, expired: asked online
                entry = {"status_code": None, "body": None}
            lines[str(self.field(record, "custom_id", what))] = entry
        return lines


class GeminiBatchAPI(BatchAPI):
    """The Gemini API's batch mode with inlined requests (module docstring)."""

    name = "gemini"
    supports_n = False
    max_bytes = 20_000_000  # inlined requests
    _STATES = {"BATCH_STATE_PENDING": "validating", "BATCH_STATE_RUNNING": "in_progress",
               "BATCH_STATE_SUCCEEDED": "completed", "BATCH_STATE_FAILED": "failed",
               "BATCH_STATE_CANCELLED": "cancelled", "BATCH_STATE_EXPIRED": "expired"}  # fmt: skip

    def __init__(self, base_url: str, api_key: str, timeout_s: float, settings: Any, model: str = ""):
        # the OpenAI-compatible root ends in /openai; the batch methods are the native API's
        super().__init__(base_url.rstrip("/").removesuffix("/openai"), api_key, timeout_s, settings)
        self.model = model

    def headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def input_line(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"request": gemini_request(body), "metadata": {"key": cid}}

    async def upload(self, local: str, data: bytes) -> str:
        return ""  # inlined requests

    async def create(self, local: str, input_file_id: str, lines: list[dict[str, Any]]) -> BatchView:
        model = self.model if self.model.startswith("models/") else f"models/{self.model}"
        body = {"batch": {"display_name": local, "input_config": {"requests": {"requests": lines}}}}
        what = f"POST /{model}:batchGenerateContent"
        return self.view(await self.request("POST", f"/{model}:batchGenerateContent", what, json=body), what)

    async def probe(self) -> None:
        answer = await self.request("GET", "/batches", "GET /batches", params={"pageSize": 1})
        if not isinstance(answer, dict):
            raise self.shape("GET /batches", f"a {type(answer).__name__}, not an object")

    async def retrieve(self, batch_id: str) -> BatchView:
        what = f"GET /{batch_id}"
        return self.view(await self.request("GET", f"/{batch_id}", what), what)

    async def find(self, local: str, input_file_id: str | None, since: float, ids: list[str]) -> BatchView | None:
        answer = await self.request("GET", "/batches", "GET /batches", params={"pageSize": 100})
        for item in answer.get("operations") or [] if isinstance(answer, dict) else []:
            meta = item.get("metadata") or {}
            if meta.get("displayName") == local:
                return self.view(item, "GET /batches")
        return None

    def view(self, data: Any, what: str) -> BatchView:
        name = str(self.field(data, "name", what))
        meta = self.field(data, "metadata", what)
        state = self.field(meta, "state", what)
        if state not in self._STATES:
            raise self.shape(what, f"state {state!r}")
        stats = meta.get("batchStats") or {}
        names = {"total": "requestCount", "completed": "successfulRequestCount", "failed": "failedRequestCount"}
        counts = {mine: int(stats.get(theirs) or 0) for mine, theirs in names.items()}
        return BatchView(name, self._STATES[state], counts, data)

    async def results(self, view: BatchView) -> dict[str, dict[str, Any]]:
        what = f"GET /{view.id} (its response)"
        response = view.raw.get("response") or (view.raw.get("metadata") or {}).get("output") or {}
        inlined = (response.get("inlinedResponses") or {}).get("inlinedResponses")
        if inlined is None:
            if view.status != "completed":
                return {}
            raise self.shape(what, "no response.inlinedResponses.inlinedResponses")
        lines: dict[str, dict[str, Any]] = {}
        for item in inlined:
            key = str(self.field(self.field(item, "metadata", what), "key", what))
            if "response" in item:
                lines[key] = {"status_code": 200, "body": gemini_completion(item["response"], self.model, self)}
            else:
                code = int((item.get("error") or {}).get("code") or 500)
                status = 400 if code in (3, 400) else 500  # google.rpc INVALID_ARGUMENT is 3
                lines[key] = {"status_code": status, "body": {"error": item.get("error") or {}}}
        return lines


def build_api(provider: str, base_url: str, api_key: str, timeout_s: float, settings: Any, model: str) -> BatchAPI:
    if provider == "gemini":
        return GeminiBatchAPI(base_url, api_key, timeout_s, settings, model=model)
    return {"openai": BatchAPI, "together": TogetherBatchAPI, "anthropic": AnthropicBatchAPI}[provider](
        base_url, api_key, timeout_s, settings
    )


def _json(text: str, api: BatchAPI, what: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError:
        raise api.shape(what, f"a line that is not JSON ({text[:60]!r})") from None
    if not isinstance(record, dict):
        raise api.shape(what, f"a line of type {type(record).__name__}")
    return record


def _epoch(stamp: Any) -> float:
    """An RFC 3339 time as seconds since the epoch (0 when it cannot be read)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
