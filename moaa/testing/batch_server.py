"""The OpenAI test server plus the Batch API's files and batches endpoints (raw asyncio, no model).

In-process: ``with BatchTestServer(validating_s=0.2, in_progress_s=0.5) as srv: ...``; it answers
everything `OpenAITestServer` does (chat completions with its deterministic replies, faults, the
request log) and, in the shape of OpenAI's Batch API (platform.openai.com/docs/api-reference/batch):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``) -> a file object; ``GET /v1/files/{id}/content``
  -> its bytes (uploaded input files, and the output and error files batches write);
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``) -> a batch
  object; ``GET /v1/batches/{id}``; ``GET /v1/batches`` (a list, newest first);
  ``POST /v1/batches/{id}/cancel``.

A batch's status follows the clock from its creation: ``validating`` for ``validating_s``, then
``in_progress`` for ``in_progress_s``, ``finalizing`` for ``finalizing_s``, then ``completed``, when
its output file (one line per answered request: ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}``) and error file (the requests that failed) are written. With
``expire_after_s`` set, a batch still unfinished that long after creation is ``expired`` instead,
with only the first ``expire_done`` of its requests answered. ``cancel`` makes it ``cancelling`` for
``finalizing_s``, then ``cancelled`` with none answered. ``line_status(body) -> int | None``: a status
other than 200 puts that request in the error file. ``submitted`` counts every request of every
batch created (resubmissions included), so a test can assert that a resumed run sent none again.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from moaa.testing.openai_replies import build_completion, error_body
from moaa.testing.openai_server import OpenAITestServer

LineStatus = Callable[[dict], "int | None"]


class BatchTestServer(OpenAITestServer):
    """OpenAITestServer with OpenAI's files and batches endpoints (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        validating_s: float = 0.1,
        in_progress_s: float = 0.3,
        finalizing_s: float = 0.1,
        expire_after_s: float | None = None,
        expire_done: int = 0,
        line_status: LineStatus | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.validating_s, self.in_progress_s, self.finalizing_s = validating_s, in_progress_s, finalizing_s
        self.expire_after_s, self.expire_done, self.line_status = expire_after_s, expire_done, line_status
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.submitted = 0  # requests in every batch created
        self._ids = itertools.count(1)

    # -- routing ------------------------------------------------------------------------------
    async def _answer(self, method: str, path: str, headers: dict, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if not (path.startswith("/v1/files") or path.startswith("/v1/batches")):
            return await super()._answer(method, path, headers, raw, writer)
        record: dict[str, Any] = {"t": time.time(), "path": path, "status": 200, "fault": None, "body": None}
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            status, out, kind = 401, error_body(401, "Incorrect API key provided."), "application/json"
        else:
            status, out, kind = self._route(method, path, headers, raw)
        return await self._reply(writer, record, status, out, kind)

    async def _reply(self, writer: asyncio.StreamWriter, record: dict, status: int, out: bytes, kind: str) -> bool:
        """Log `record` with its status, then answer (keep-alive)."""
        record["status"] = status
        self._record(record)
        head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: {kind}\r\n"
        writer.write(f"{head}Content-Length: {len(out)}\r\n\r\n".encode() + out)
        await writer.drain()
        return True

    def _route(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, bytes, str]:
        parts = path.strip("/").split("/")[1:]  # after "v1"
        if parts == ["files"] and method == "POST":
            return self._upload(headers.get("content-type", ""), raw)
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content" and method == "GET":
            found = self.files.get(parts[1])
            if found is None:
                return 404, error_body(404, f"No such file {parts[1]}."), "application/json"
            return 200, found["data"], "application/octet-stream"
        if parts == ["batches"] and method == "POST":
            return self._create(json.loads(raw or b"{}"))
        if parts == ["batches"] and method == "GET":
            data = [self._view(b) for b in sorted(self.batches.values(), key=lambda b: -b["created_at"])]
            return 200, json.dumps({"object": "list", "data": data, "has_more": False}).encode(), "application/json"
        if len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
            batch = self.batches[parts[1]]
            if len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                if self._view(batch)["status"] in ("validating", "in_progress", "finalizing"):
                    batch["cancelled_at"] = time.time()
            return 200, json.dumps(self._view(batch)).encode(), "application/json"
        return 404, error_body(404, f"Unknown route {method} {path}."), "application/json"

    # -- files and batches --------------------------------------------------------------------
    def _upload(self, content_type: str, raw: bytes) -> tuple[int, bytes, str]:
        fields = parse_multipart(content_type, raw)
        if "file" not in fields or "purpose" not in fields:
            return 400, error_body(400, "A file and its purpose are required."), "application/json"
        name, data = fields["file"]
        file_id = self._file(data, fields["purpose"][1].decode(), name or "upload.jsonl")
        return 200, json.dumps(self._file_object(file_id)).encode(), "application/json"

    def _file(self, data: bytes, purpose: str, name: str) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = {"data": data, "purpose": purpose, "filename": name, "created_at": int(time.time())}
        return file_id

    def _file_object(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {
            "id": file_id, "object": "file", "bytes": len(f["data"]), "created_at": f["created_at"],
            "filename": f["filename"], "purpose": f["purpose"],
        }  # fmt: skip

    def _create(self, req: dict[str, Any]) -> tuple[int, bytes, str]:
        source = self.files.get(req.get("input_file_id", ""))
        if source is None:
            return 400, error_body(400, "input_file_id does not name an uploaded file."), "application/json"
        lines = [json.loads(line) for line in source["data"].decode().splitlines() if line.strip()]
        self.submitted += len(lines)
        batch_id = f"batch_{next(self._ids)}"
        self.batches[batch_id] = {
            "id": batch_id, "input_file_id": req["input_file_id"], "endpoint": req.get("endpoint"),
            "completion_window": req.get("completion_window", "24h"), "metadata": req.get("metadata"),
            "created_at": time.time(), "lines": lines, "cancelled_at": None, "result": None,
        }  # fmt: skip
        return 200, json.dumps(self._view(self.batches[batch_id])).encode(), "application/json"

    def _status(self, b: dict[str, Any], now: float) -> str:
        age = now - b["created_at"]
        if b["cancelled_at"] is not None:
            return "cancelled" if now - b["cancelled_at"] >= self.finalizing_s else "cancelling"
        done_at = self.validating_s + self.in_progress_s + self.finalizing_s
        if self.expire_after_s is not None and self.expire_after_s < done_at and age >= self.expire_after_s:
            return "expired"
        if age < self.validating_s:
            return "validating"
        if age < self.validating_s + self.in_progress_s:
            return "in_progress"
        return "finalizing" if age < done_at else "completed"

    def _view(self, b: dict[str, Any]) -> dict[str, Any]:
        """The batch object as GET /v1/batches/{id} returns it (results written once it ends)."""
        status = self._status(b, time.time())
        if status in ("completed", "expired", "cancelled") and b["result"] is None:
            b["result"] = self._finish(b, status)
        out, err = b["result"] or (None, None)
        total = len(b["lines"])
        failed = len(self.files[err]["data"].splitlines()) if err else 0
        completed = len(self.files[out]["data"].splitlines()) if out else 0
        return {
            "id": b["id"], "object": "batch", "endpoint": b["endpoint"], "errors": None,
            "input_file_id": b["input_file_id"], "completion_window": b["completion_window"], "status": status,
            "output_file_id": out, "error_file_id": err, "created_at": int(b["created_at"]),
            "request_counts": {"total": total, "completed": completed, "failed": failed}, "metadata": b["metadata"],
        }  # fmt: skip

    def _finish(self, b: dict[str, Any], status: str) -> tuple[str | None, str | None]:
        """Answer the batch's requests (all, the first `expire_done` when expired, none when
        cancelled) into an output and an error file; their ids."""
        todo = {"completed": b["lines"], "expired": b["lines"][: self.expire_done], "cancelled": []}[status]
        outputs, errors = [], []
        for line in todo:
            answer = self._answer_line(line)
            (outputs if answer["response"]["status_code"] == 200 else errors).append(json.dumps(answer))
        out = (
            self._file("".join(x + "\n" for x in outputs).encode(), "batch_output", "output.jsonl") if outputs else None
        )
        err = self._file("".join(x + "\n" for x in errors).encode(), "batch_output", "errors.jsonl") if errors else None
        return out, err

    def _answer_line(self, line: dict[str, Any]) -> dict[str, Any]:
        body = line.get("body") or {}
        status = (self.line_status(body) if self.line_status else None) or 200
        self._counter += 1
        self.requests.append({"t": time.time(), "path": "batch:" + line.get("url", ""), "status": status, "body": body})
        if status == 200:
            reply: Any = build_completion(
                body, f"chatcmpl-batch{self._counter}", responder=self.responder, ignore_n=self.ignore_n,
                filler_words=self.filler_words, greedy=self.greedy,
            )  # fmt: skip
        else:
            reply = json.loads(error_body(status, f"Injected batch line fault {status}."))
        response = {"status_code": status, "request_id": f"req_{self._counter}", "body": reply}
        return {
            "id": f"batch_req_{self._counter}",
            "custom_id": line.get("custom_id"),
            "response": response,
            "error": None,
        }


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";") if "boundary=" in p), None)
    if boundary is None:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in raw.split(b"--" + boundary.encode()):
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = next(
            (h for h in head.decode("latin-1").split("\r\n") if h.lower().startswith("content-disposition")), ""
        )
        params = dict(p.strip().split("=", 1) for p in disposition.split(";") if "=" in p)
        name = params.get("name", "").strip('"')
        filename = params.get("filename", "").strip('"') or None
        fields[name] = (filename, data[:-2] if data.endswith(b"\r\n") else data)
    return fields
