"""A local stand-in for the Hugging Face Hub's HTTP API, enough for `HfApi` to publish a dataset.

    with HubStub(token="hf_test") as hub:          # http://127.0.0.1:<port>
        HfApi(endpoint=hub.url, token="hf_test").create_repo("org/x", repo_type="dataset")
        hub.repos["datasets/org/x"].commits[-1].files  # what the commit carried

It speaks the protocol huggingface_hub 0.30-2.x uses for a commit: `POST /api/repos/create`,
`POST /api/validate-yaml`, `GET .../refs`, `GET .../tree/<rev>`, `POST .../preupload/<rev>`
(every file answered "regular", so contents travel base64 inside the commit and no LFS/Xet
transfer is involved), `POST .../commit/<rev>` (NDJSON: a header line, then one line per
file/deletion) and `POST .../tag/<rev>`. Requests without `Authorization: Bearer <token>` get 401.
Every request is recorded (method, path, headers, body) so a test can check what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

_REPO_PATH = re.compile(r"^/api/(datasets|models|spaces)/([^/]+/[^/]+)/(preupload|commit|tag|tree|refs)(?:/([^?]*))?")


@dataclass
class Commit:
    oid: str
    summary: str
    description: str
    files: dict[str, bytes]  # files added by this commit
    deleted: list[str]


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": b"*.parquet filter=lfs\n"})
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HubStub:
    """A threaded HTTP server on 127.0.0.1 holding repos in memory."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}  # "datasets/org/name" -> Repo
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- routes -------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        with self._lock:
            if path == "/api/validate-yaml" and method == "POST":
                return self._validate_yaml(json.loads(body))
            if path == "/api/repos/create" and method == "POST":
                return self._create(json.loads(body))
            match = _REPO_PATH.match(path)
            if not match:
                return 404, {"error": f"no route {method} {path}"}
            kind, repo_id, action, rev = match.groups()
            repo = self.repos.get(f"{kind}/{repo_id}")
            if repo is None:
                return 404, {"error": "Repository not found"}
            return getattr(self, f"_{action}")(repo, f"{kind}/{repo_id}", rev or "", body)

    def _validate_yaml(self, payload: dict) -> tuple[int, Any]:
        text = payload["content"]
        try:
            yaml.safe_load(text.split("---\n")[1]) if text.startswith("---\n") else None
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": str(exc)}]}
        return 200, {"errors": [], "warnings": []}

    def _create(self, payload: dict) -> tuple[int, Any]:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        key = f"{payload.get('type', 'model')}s/{repo_id}"
        if key in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/{key}"}
        # huggingface_hub >= 1.x sends "visibility"; older versions send "private"
        self.repos[key] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return 200, {"url": f"{self.url}/{key}", "name": repo_id}

    def _refs(self, repo: Repo, key: str, rev: str, body: bytes) -> tuple[int, Any]:
        ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
        return 200, {
            "branches": [ref("heads", "main", repo.head)],
            "converts": [],
            "tags": [ref("tags", name, oid) for name, oid in repo.tags.items()],
        }

    def _tree(self, repo: Repo, key: str, rev: str, body: bytes) -> tuple[int, Any]:
        return 200, [
            {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for p, data in sorted(repo.files.items())
        ]

    def _preupload(self, repo: Repo, key: str, rev: str, body: bytes) -> tuple[int, Any]:
        files = json.loads(body)["files"]
        return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    def _commit(self, repo: Repo, key: str, rev: str, body: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        added, deleted = {}, []
        for line in lines[1:]:
            if line["key"] == "file":
                added[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                deleted.append(line["value"]["path"])
            else:
                return 400, {"error": f"stub does not support {line['key']}"}
        for path in deleted:
            repo.files.pop(path, None)
        repo.files.update(added)
        oid = hashlib.sha1(f"{repo.head}{sorted(added)}{len(repo.commits)}".encode()).hexdigest()
        repo.commits.append(Commit(oid, header["summary"], header.get("description", ""), added, deleted))
        return 200, {"commitUrl": f"{self.url}/{key}/commit/{oid}", "commitOid": oid}

    def _tag(self, repo: Repo, key: str, rev: str, body: bytes) -> tuple[int, Any]:
        tag = json.loads(body)["tag"]
        if tag in repo.tags:
            return 409, {"error": f"Tag {tag} already exists"}
        if rev not in {c.oid for c in repo.commits}:
            return 404, {"error": f"Invalid rev id: {rev}"}
        repo.tags[tag] = rev
        return 200, {}


def _handler(hub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                status, payload = 401, {"error": "Invalid credentials in Authorization header"}
            else:
                status, payload = hub.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
