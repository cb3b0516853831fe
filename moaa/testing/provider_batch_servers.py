"""Local Batch APIs in Together's, Anthropic's and Gemini's documented shapes (no model), for tests.

Each is `moaa.testing.batch_server.BatchTestServer` (the same clock of states: validating_s,
in_progress_s, finalizing_s, expire_after_s / expire_done, line_status, `submitted`) behind its
provider's routes and bodies, and it answers that provider's OpenAI-compatible chat completions too
(the online fallback):

- `TogetherBatchServer` (github.com/togethercomputer/openapi, openapi.yaml): `POST /v1/files/upload`
  (multipart file, file_name, purpose), `POST /v1/batches` answering 201 `{"job": BatchJob,
  "warning"}`, `GET /v1/batches/{id}` a BatchJob (status VALIDATING / IN_PROGRESS / COMPLETED /
  FAILED / EXPIRED / CANCELLED, progress 0-100), `GET /v1/batches` a bare array; output files as
  OpenAI's. No `POST /v1/files` (404, as the spec has none).
- `AnthropicBatchServer` (Message Batches API): `POST /v1/messages/batches` with `{"requests":
  [{"custom_id", "params"}]}`, `GET /v1/messages/batches/{id}` (processing_status in_progress /
  canceling / ended, request_counts), `GET /v1/messages/batches` (`{"data", "has_more", "first_id",
  "last_id"}`), `GET .../{id}/results` (JSONL: succeeded / errored / canceled / expired). Keys in
  `x-api-key`. Like Anthropic's API, it takes no seed: its chat completions ignore `seed` too.
- `GeminiBatchServer` (Gemini API batch mode): `POST /v1beta/models/{model}:batchGenerateContent`
  with inlined requests, `GET /v1beta/batches/{id}` an Operation (`metadata.state`
  BATCH_STATE_*, `batchStats` with int64 counts as strings, `done`, `response.inlinedResponses`),
  `GET /v1beta/batches` (`{"operations"}`); chat completions also at `/v1beta/openai/chat/completions`.
  Keys in `x-goog-api-key`.

`shape_fault` (a route -> a body) answers a route with an undocumented body, to test that moaa
names the provider and what was unexpected.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from moaa.testing.batch_server import BatchTestServer, parse_multipart

JSON = "application/json"


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z") if t else None


class _ProviderServer(BatchTestServer):
    """The shared plumbing: key header, routing hook, JSON answers, undocumented-shape faults."""

    key_header = "authorization"
    shape_fault: dict[str, Any]

    def __init__(self, *args: Any, shape_fault: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shape_fault = dict(shape_fault or {})

    def _key_ok(self, headers: dict) -> bool:
        if not self.api_key:
            return True
        given = headers.get(self.key_header, "")
        return given in (self.api_key, f"Bearer {self.api_key}")

    def _faulted(self, route: str, status: int, data: Any) -> tuple[int, bytes, str]:
        if route in self.shape_fault:
            data = self.shape_fault[route]
        return status, json.dumps(data).encode(), JSON

    def _lines_of(self, b: dict[str, Any]) -> list[dict[str, Any]]:
        return b["lines"]


class TogetherBatchServer(_ProviderServer):
    """Together's Batch API shapes (module docstring)."""

    async def _answer(self, method: str, path: str, headers: dict, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if not (path.startswith("/v1/files") or path.startswith("/v1/batches")):
            return await super(BatchTestServer, self)._answer(method, path, headers, raw, writer)
        record: dict[str, Any] = {"t": time.time(), "path": path, "status": 200, "fault": None, "body": None}
        if not self._key_ok(headers):
            return await self._reply(writer, record, 401, b'{"error": "Unauthorized"}', JSON)
        return await self._reply(writer, record, *self._route_together(method, path, headers, raw))

    def _route_together(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, bytes, str]:
        parts = path.strip("/").split("/")[1:]
        if parts == ["files", "upload"] and method == "POST":
            fields = parse_multipart(headers.get("content-type", ""), raw)
            if not {"file", "purpose", "file_name"} <= set(fields):
                return 400, b'{"error": "file, file_name and purpose are required"}', JSON
            file_id = self._file(fields["file"][1], fields["purpose"][1].decode(), fields["file_name"][1].decode())
            obj = self._file_object(file_id) | {"FileType": "jsonl", "Processed": True}
            return self._faulted("POST /files/upload", 200, obj)
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and method == "GET":
            found = self.files.get(parts[1])
            return (200, found["data"], "application/octet-stream") if found else (404, b'{"error": "no file"}', JSON)
        if parts == ["batches"] and method == "POST":
            status, out, _ = self._create(json.loads(raw or b"{}"))
            if status != 200:
                return status, out, JSON
            job = self._together(self.batches[json.loads(out)["id"]])
            return self._faulted("POST /batches", 201, {"job": job, "warning": ""})
        if parts == ["batches"] and method == "GET":
            jobs = [self._together(b) for b in sorted(self.batches.values(), key=lambda b: -b["created_at"])]
            return self._faulted("GET /batches", 200, jobs)
        if len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
            batch = self.batches[parts[1]]
            if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                batch["cancelled_at"] = batch["cancelled_at"] or time.time()
            return self._faulted("GET /batches/{id}", 200, self._together(batch))
        return 404, b'{"error": "Not Found"}', JSON

    def _together(self, b: dict[str, Any]) -> dict[str, Any]:
        view = self._view(b)
        status = {"validating": "VALIDATING", "in_progress": "IN_PROGRESS", "finalizing": "IN_PROGRESS",
                  "completed": "COMPLETED", "expired": "EXPIRED", "cancelling": "IN_PROGRESS",
                  "cancelled": "CANCELLED"}[view["status"]]  # fmt: skip
        counts = view["request_counts"]
        done = (counts["completed"] + counts["failed"]) / max(counts["total"], 1)
        return {
            "id": view["id"], "user_id": "user-test", "input_file_id": view["input_file_id"],
            "file_size_bytes": len(self.files[view["input_file_id"]]["data"]), "status": status,
            "job_deadline": _iso(b["created_at"] + 86400), "created_at": _iso(b["created_at"]),
            "endpoint": view["endpoint"], "progress": 100.0 if status == "COMPLETED" else round(100 * done, 1),
            "model_id": (b["lines"][0].get("body") or {}).get("model") if b["lines"] else None,
            "output_file_id": view["output_file_id"], "error_file_id": view["error_file_id"], "error": None,
            "completed_at": _iso(time.time()) if status in ("COMPLETED", "EXPIRED", "CANCELLED") else None,
        }  # fmt: skip


class AnthropicBatchServer(_ProviderServer):
    """Anthropic's Message Batches shapes (module docstring)."""

    key_header = "x-api-key"

    def _chat(self, body: Any, fault: str | None, auth: str = "") -> tuple[int | None, bytes, dict[str, str]]:
        if isinstance(body, dict):  # Anthropic takes no seed: its OpenAI-compatible endpoint ignores it
            body = {k: v for k, v in body.items() if k != "seed"}
        return super()._chat(body, fault, auth)

    async def _answer(self, method: str, path: str, headers: dict, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if not path.startswith("/v1/messages/batches"):
            return await super(BatchTestServer, self)._answer(method, path, headers, raw, writer)
        record: dict[str, Any] = {"t": time.time(), "path": path, "status": 200, "fault": None, "body": None}
        if not self._key_ok(headers) or headers.get("anthropic-version") != "2023-06-01":
            out = b'{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}'
            return await self._reply(writer, record, 401, out, JSON)
        return await self._reply(writer, record, *self._route_anthropic(method, path, raw))

    def _route_anthropic(self, method: str, path: str, raw: bytes) -> tuple[int, bytes, str]:
        parts = path.strip("/").split("/")[3:]  # after v1/messages/batches
        if not parts and method == "POST":
            requests = json.loads(raw or b"{}").get("requests") or []
            lines = [{"custom_id": r["custom_id"], "body": chat_body(r["params"])} for r in requests]
            self.submitted += len(lines)
            batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
            self.batches[batch_id] = {"id": batch_id, "created_at": time.time(), "lines": lines,
                                      "cancelled_at": None, "result": None}  # fmt: skip
            return self._faulted("POST /messages/batches", 200, self._message_batch(self.batches[batch_id]))
        if not parts and method == "GET":
            data = [self._message_batch(b) for b in sorted(self.batches.values(), key=lambda b: -b["created_at"])]
            listing = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                       "last_id": data[-1]["id"] if data else None}  # fmt: skip
            return self._faulted("GET /messages/batches", 200, listing)
        if parts and parts[0] in self.batches:
            batch = self.batches[parts[0]]
            if parts[1:] == ["cancel"] and method == "POST":
                batch["cancelled_at"] = batch["cancelled_at"] or time.time()
            if parts[1:] == ["results"]:
                return self._results(batch)
            return self._faulted("GET /messages/batches/{id}", 200, self._message_batch(batch))
        return 404, b'{"type": "error", "error": {"type": "not_found_error", "message": "Not found"}}', JSON

    def _message_batch(self, b: dict[str, Any]) -> dict[str, Any]:
        status = self._status(b, time.time())
        ended = status in ("completed", "expired", "cancelled")
        if ended and b["result"] is None:
            b["result"] = self._outcomes(b, status)
        counts = {"processing": 0 if ended else len(b["lines"]), "succeeded": 0, "errored": 0, "canceled": 0,
                  "expired": 0}  # fmt: skip
        for entry in (b["result"] or {}).values():
            counts[entry["result"]["type"]] += 1
        return {
            "id": b["id"], "type": "message_batch",
            "processing_status": "ended" if ended else "canceling" if status == "cancelling" else "in_progress",
            "request_counts": counts, "ended_at": _iso(time.time()) if ended else None,
            "created_at": _iso(b["created_at"]), "expires_at": _iso(b["created_at"] + 86400), "archived_at": None,
            "cancel_initiated_at": _iso(b["cancelled_at"]),
            "results_url": f"http://{self.host}:{self.port}/v1/messages/batches/{b['id']}/results" if ended else None,
        }  # fmt: skip

    def _outcomes(self, b: dict[str, Any], status: str) -> dict[str, dict[str, Any]]:
        answered = {"completed": len(b["lines"]), "expired": self.expire_done, "cancelled": 0}[status]
        out = {}
        for i, line in enumerate(b["lines"]):
            if i >= answered:
                kind = "expired" if status == "expired" else "canceled"
                out[line["custom_id"]] = {"custom_id": line["custom_id"], "result": {"type": kind}}
                continue
            answer = self._answer_line(line)["response"]
            if answer["status_code"] == 200:
                result = {"type": "succeeded", "message": anthropic_message(answer["body"])}
            else:
                kind = "invalid_request_error" if answer["status_code"] == 400 else "api_error"
                error = {"type": kind, "message": answer["body"]["error"]["message"]}
                result = {"type": "errored", "error": {"type": "error", "error": error}}
            out[line["custom_id"]] = {"custom_id": line["custom_id"], "result": result}
        return out

    def _results(self, b: dict[str, Any]) -> tuple[int, bytes, str]:
        if b["result"] is None:
            return 404, b'{"type": "error", "error": {"type": "not_found_error", "message": "not ended"}}', JSON
        if "GET /messages/batches/{id}/results" in self.shape_fault:
            return 200, self.shape_fault["GET /messages/batches/{id}/results"].encode(), "application/x-jsonl"
        body = "".join(json.dumps(e) + "\n" for e in b["result"].values()).encode()
        return 200, body, "application/binary"


class GeminiBatchServer(_ProviderServer):
    """The Gemini API's batch mode shapes (module docstring)."""

    key_header = "x-goog-api-key"

    async def _answer(self, method: str, path: str, headers: dict, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if path == "/v1beta/openai/chat/completions" or path == "/v1beta/openai/models":
            path = path.replace("/v1beta/openai", "/v1")
        if not path.startswith("/v1beta/"):
            return await super(BatchTestServer, self)._answer(method, path, headers, raw, writer)
        record: dict[str, Any] = {"t": time.time(), "path": path, "status": 200, "fault": None, "body": None}
        if not self._key_ok(headers):
            out = json.dumps({"error": {"code": 403, "message": "API key not valid", "status": "PERMISSION_DENIED"}})
            return await self._reply(writer, record, 403, out.encode(), JSON)
        return await self._reply(writer, record, *self._route_gemini(method, path, raw))

    def _route_gemini(self, method: str, path: str, raw: bytes) -> tuple[int, bytes, str]:
        rest = path[len("/v1beta/") :]
        if rest.startswith("models/") and rest.endswith(":batchGenerateContent") and method == "POST":
            model = rest[: -len(":batchGenerateContent")]
            batch = json.loads(raw or b"{}").get("batch") or {}
            requests = ((batch.get("input_config") or {}).get("requests") or {}).get("requests") or []
            lines = [
                {"custom_id": r["metadata"]["key"], "body": chat_body_gemini(r["request"], model)} for r in requests
            ]
            self.submitted += len(lines)
            name = f"batches/{uuid.uuid4().hex[:20]}"
            self.batches[name] = {
                "id": name,
                "created_at": time.time(),
                "lines": lines,
                "cancelled_at": None,
                "result": None,
                "model": model,
                "display_name": batch.get("display_name"),
            }
            return self._faulted("POST batchGenerateContent", 200, self._operation(self.batches[name]))
        if rest == "batches" and method == "GET":
            ops = [self._operation(b) for b in sorted(self.batches.values(), key=lambda b: -b["created_at"])]
            return self._faulted("GET /batches", 200, {"operations": ops})
        name = rest.removesuffix(":cancel")
        if name in self.batches:
            batch = self.batches[name]
            if rest.endswith(":cancel") and method == "POST":
                batch["cancelled_at"] = batch["cancelled_at"] or time.time()
                return 200, b"{}", JSON
            return self._faulted("GET /batches/{id}", 200, self._operation(batch))
        return (
            404,
            json.dumps({"error": {"code": 404, "message": f"{rest} not found", "status": "NOT_FOUND"}}).encode(),
            JSON,
        )

    def _operation(self, b: dict[str, Any]) -> dict[str, Any]:
        status = self._status(b, time.time())
        state = {"validating": "BATCH_STATE_PENDING", "in_progress": "BATCH_STATE_RUNNING",
                 "finalizing": "BATCH_STATE_RUNNING", "completed": "BATCH_STATE_SUCCEEDED",
                 "expired": "BATCH_STATE_EXPIRED", "cancelling": "BATCH_STATE_RUNNING",
                 "cancelled": "BATCH_STATE_CANCELLED"}[status]  # fmt: skip
        ended = status in ("completed", "expired", "cancelled")
        if ended and b["result"] is None:
            answered = {"completed": len(b["lines"]), "expired": self.expire_done, "cancelled": 0}[status]
            b["result"] = [self._inlined(line) for line in b["lines"][:answered]]
        done = b["result"] or []
        ok = sum(1 for r in done if "response" in r)
        pending = 0 if ended else len(b["lines"])
        stats = {"requestCount": str(len(b["lines"])), "successfulRequestCount": str(ok),
                 "failedRequestCount": str(len(done) - ok), "pendingRequestCount": str(pending)}  # fmt: skip
        meta = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                "model": b["model"], "displayName": b["display_name"], "createTime": _iso(b["created_at"]),
                "updateTime": _iso(time.time()), "batchStats": stats, "state": state, "name": b["id"]}  # fmt: skip
        op: dict[str, Any] = {"name": b["id"], "metadata": meta}
        if ended:
            op["done"] = True
            output = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                      "inlinedResponses": {"inlinedResponses": done}}  # fmt: skip
            if status == "completed":
                op["response"] = output
            else:
                meta["output"] = output
        return op

    def _inlined(self, line: dict[str, Any]) -> dict[str, Any]:
        answer = self._answer_line(line)["response"]
        if answer["status_code"] != 200:
            code = 3 if answer["status_code"] == 400 else 13  # INVALID_ARGUMENT, INTERNAL
            return {
                "error": {"code": code, "message": answer["body"]["error"]["message"]},
                "metadata": {"key": line["custom_id"]},
            }  # noqa: E501
        return {"response": gemini_response(answer["body"]), "metadata": {"key": line["custom_id"]}}


# ------------------------------------------------------------ native bodies <-> the reply builder's chat bodies


def chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """Messages API params as the chat body the test replies are built from (no seed: none is sent)."""
    messages = ([{"role": "system", "content": params["system"]}] if params.get("system") else []) + list(
        params["messages"]
    )
    body = {"model": params["model"], "messages": messages, "max_tokens": params.get("max_tokens")}
    for key in ("temperature", "top_p"):
        if key in params:
            body[key] = params[key]
    if params.get("stop_sequences"):
        body["stop"] = params["stop_sequences"]
    return body


def anthropic_message(completion: dict[str, Any]) -> dict[str, Any]:
    choice = completion["choices"][0]
    stop = {"stop": "end_turn", "length": "max_tokens"}.get(choice.get("finish_reason"), "end_turn")
    usage = completion.get("usage") or {}
    return {
        "id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": completion["model"],
        "content": [{"type": "text", "text": choice["message"]["content"]}], "stop_reason": stop,
        "stop_sequence": None, "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                         "output_tokens": usage.get("completion_tokens", 0)},
    }  # fmt: skip


def chat_body_gemini(request: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentRequest as the chat body the test replies are built from."""
    system = " ".join(p.get("text", "") for p in (request.get("systemInstruction") or {}).get("parts") or [])
    messages = [{"role": "system", "content": system}] if system else []
    for turn in request.get("contents") or []:
        text = "".join(p.get("text", "") for p in turn.get("parts") or [])
        messages.append({"role": "assistant" if turn.get("role") == "model" else "user", "content": text})
    config = request.get("generationConfig") or {}
    body: dict[str, Any] = {"model": model.removeprefix("models/"), "messages": messages}
    for mine, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                         ("max_tokens", "maxOutputTokens"), ("stop", "stopSequences")):  # fmt: skip
        if theirs in config:
            body[mine] = config[theirs]
    return body


def gemini_response(completion: dict[str, Any]) -> dict[str, Any]:
    choice = completion["choices"][0]
    usage = completion.get("usage") or {}
    reason = "MAX_TOKENS" if choice.get("finish_reason") == "length" else "STOP"
    return {
        "candidates": [{"content": {"parts": [{"text": choice["message"]["content"]}], "role": "model"},
                        "finishReason": reason, "index": 0}],
        "usageMetadata": {"promptTokenCount": usage.get("prompt_tokens", 0),
                          "candidatesTokenCount": usage.get("completion_tokens", 0),
                          "totalTokenCount": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)},
        "modelVersion": completion["model"],
    }  # fmt: skip
