"""A local stand-in for the Hugging Face Hub's HTTP API, enough for `HfApi` to publish a dataset.

    with HubStub(token="hf_test") as hub:          # http://127.0.0.1:<port>
        HfApi(endpoint=hub.url, token="hf_test").create_repo("org/x", repo_type="dataset")
        hub.repos["datasets/org/x"].commits[-1].files  # what the commit carried
        hub.log                                        # "preupload data/sft/train-….parquet: lfs", ...

It speaks the protocol huggingface_hub 0.30-2.x uses for a commit: `POST /api/repos/create`,
`POST /api/validate-yaml`, `GET .../refs`, `GET .../tree/<rev>`, `POST .../preupload/<rev>`,
`POST .../commit/<rev>` (NDJSON: a header line, then one line per file/deletion) and
`POST .../tag/<rev>`; and `HEAD`/`GET /<kind>/<repo>/resolve/<rev>/<path>` for downloads.

Binary files go the way they go on the Hub: preupload answers "lfs" for a file that is binary
(a NUL byte in its sample), larger than 10 MB or matched by a `filter=lfs` line of the repo's
`.gitattributes`; the client then asks the LFS batch API (`POST /<kind>/<repo>.git/info/lfs/
objects/batch`) for an upload URL, PUTs the bytes there (no token, as to a presigned S3 URL),
calls the verify URL, and the commit names the file by its sha256 (`lfsFile`). A commit naming an
LFS object that never arrived, or bytes unlike their oid, is refused, so a broken binary upload
fails. Xet cannot be served here: tests set HF_HUB_DISABLE_XET (see `disable_xet`).
Requests without `Authorization: Bearer <token>` get 401 (except the presigned PUT and
validate-yaml, as on the Hub). Every request is recorded (method, path, headers, body).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hub_rules import metadata_errors

_REPO_PATH = re.compile(r"^/api/(datasets|models|spaces)/([^/]+/[^/]+)/(preupload|commit|tag|tree|refs)(?:/([^?]*))?")
_LFS_BATCH = re.compile(r"^/(datasets|models|spaces)/([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(datasets|models|spaces)/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_UPLOAD = re.compile(r"^/lfs-upload/([0-9a-f]{64})$")
_VERIFY = re.compile(r"^/lfs-verify/([0-9a-f]{64})$")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores larger files in LFS whatever they hold
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Commit:
    oid: str
    summary: str
    description: str
    files: dict[str, bytes]  # files added by this commit
    deleted: list[str]
    lfs: list[str] = field(default_factory=list)  # paths of `files` that came as LFS pointers
    tree: dict[str, bytes] = field(default_factory=dict)  # the repo's files after this commit


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": GITATTRIBUTES})
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40

    def tree_at(self, rev: str) -> dict[str, bytes] | None:
        """The files at a branch, tag or commit; None when rev names none of them."""
        oid = self.head if rev == "main" else self.tags.get(rev, rev)
        if oid == self.head:
            return self.files
        return next((c.tree for c in self.commits if c.oid == oid), None)

    def lfs_patterns(self) -> list[str]:
        text = self.files.get(".gitattributes", b"").decode()
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    payload: Any = None  # JSON
    raw: bytes | None = None  # a file's bytes instead of JSON
    headers: dict[str, str] = field(default_factory=dict)


def disable_xet(monkeypatch: Any) -> None:
    """Make huggingface_hub use the LFS protocol (this stub cannot serve Xet storage)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True, raising=False)


class HubStub:
    """A threaded HTTP server on 127.0.0.1 holding repos in memory."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}  # "datasets/org/name" -> Repo
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes received through the LFS upload URL
        self.requests: list[Request] = []
        self.log: list[str] = []  # what happened to each file, in words
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

    def needs_token(self, path: str) -> bool:
        return not (path == "/api/validate-yaml" or _UPLOAD.match(path))

    # --- routes -------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes) -> Reply:
        with self._lock:
            if path == "/api/validate-yaml" and method == "POST":
                return self._validate_yaml(json.loads(body))
            if path == "/api/repos/create" and method == "POST":
                return self._create(json.loads(body))
            if (match := _UPLOAD.match(path)) and method == "PUT":
                return self._lfs_put(match.group(1), body)
            if (match := _VERIFY.match(path)) and method == "POST":
                return self._lfs_verify(match.group(1), json.loads(body))
            for pattern, action in ((_REPO_PATH, None), (_LFS_BATCH, "lfs_batch"), (_RESOLVE, "resolve")):
                if match := pattern.match(path):
                    kind, repo_id, *rest = match.groups()
                    repo = self.repos.get(f"{kind}/{repo_id}")
                    if repo is None:
                        return Reply(404, {"error": "Repository not found"})
                    name = action or rest.pop(0)
                    return getattr(self, f"_{name}")(repo, f"{kind}/{repo_id}", method, body, *rest)
            return Reply(404, {"error": f"no route {method} {path}"})

    def _validate_yaml(self, payload: dict) -> Reply:
        errors = metadata_errors(payload["content"], payload.get("repoType", "model"))
        return Reply(400, {"errors": [{"message": e} for e in errors]}) if errors else Reply(200, {"errors": []})

    def _create(self, payload: dict) -> Reply:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        key = f"{payload.get('type', 'model')}s/{repo_id}"
        if key in self.repos:
            return Reply(409, {"error": "You already created this dataset repo", "url": f"{self.url}/{key}"})
        # huggingface_hub >= 1.x sends "visibility"; older versions send "private"
        self.repos[key] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return Reply(200, {"url": f"{self.url}/{key}", "name": repo_id})

    def _refs(self, repo: Repo, key: str, method: str, body: bytes, rev: str | None) -> Reply:
        ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
        return Reply(200, {
            "branches": [ref("heads", "main", repo.head)],
            "converts": [],
            "tags": [ref("tags", name, oid) for name, oid in repo.tags.items()],
        })  # fmt: skip

    def _tree(self, repo: Repo, key: str, method: str, body: bytes, rev: str | None) -> Reply:
        return Reply(200, [
            {"type": "file", "path": p, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for p, data in sorted(repo.files.items())
        ])  # fmt: skip

    def _preupload(self, repo: Repo, key: str, method: str, body: bytes, rev: str | None) -> Reply:
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = b"\x00" in sample or f["size"] > LFS_THRESHOLD
            lfs = lfs or any(fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], p) for p in repo.lfs_patterns())
            self.log.append(f"preupload {f['path']}: {'lfs' if lfs else 'regular'}")
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return Reply(200, {"files": files})

    def _lfs_batch(self, repo: Repo, key: str, method: str, body: bytes) -> Reply:
        request = json.loads(body)
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            return Reply(422, {"message": "only basic uploads are served here"})
        objects = []
        for obj in request["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs:  # already stored: no actions, the client skips the upload
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        self.log.append(f"lfs batch: {len(objects)} objects")
        return Reply(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, oid: str, body: bytes) -> Reply:
        if hashlib.sha256(body).hexdigest() != oid:
            return Reply(400, {"error": f"content does not match oid {oid}"})
        self.lfs[oid] = body
        self.log.append(f"lfs upload {oid} ({len(body)} bytes)")
        return Reply(200, {})

    def _lfs_verify(self, oid: str, payload: dict) -> Reply:
        if oid not in self.lfs or len(self.lfs[oid]) != payload.get("size"):
            return Reply(404, {"error": f"LFS object {oid} not found"})
        return Reply(200, {})

    def _commit(self, repo: Repo, key: str, method: str, body: bytes, rev: str | None) -> Reply:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        added, deleted, lfs = {}, [], []
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return Reply(422, {"error": f"LFS object of {value['path']} was never uploaded"})
                added[value["path"]], lfs = self.lfs[value["oid"]], [*lfs, value["path"]]
                self.log.append(f"commit {value['path']}: lfs pointer {value['oid']}")
            elif line["key"] == "deletedFile":
                deleted.append(value["path"])
            else:
                return Reply(400, {"error": f"stub does not support {line['key']}"})
        self.log += [f"commit {p}: regular" for p in added if p not in lfs]
        for path in deleted:
            repo.files.pop(path, None)
        repo.files.update(added)
        oid = hashlib.sha1(f"{repo.head}{sorted(added)}{len(repo.commits)}".encode()).hexdigest()
        commit = Commit(oid, header["summary"], header.get("description", ""), added, deleted, lfs, dict(repo.files))
        repo.commits.append(commit)
        return Reply(200, {"commitUrl": f"{self.url}/{key}/commit/{oid}", "commitOid": oid})

    def _tag(self, repo: Repo, key: str, method: str, body: bytes, rev: str | None) -> Reply:
        tag = json.loads(body)["tag"]
        if tag in repo.tags:
            return Reply(409, {"error": f"Tag {tag} already exists"})
        if rev not in {c.oid for c in repo.commits}:
            return Reply(404, {"error": f"Invalid rev id: {rev}"})
        repo.tags[tag] = rev
        return Reply(200, {})

    def _resolve(self, repo: Repo, key: str, method: str, body: bytes, rev: str, path: str) -> Reply:
        tree = repo.tree_at(rev)
        if tree is None or path not in tree:
            return Reply(404, {"error": f"{path} not found at {rev}"}, headers={"X-Error-Code": "EntryNotFound"})
        data = tree[path]
        oid = self.head_of(repo, rev)
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        return Reply(200, raw=data, headers={"X-Repo-Commit": oid, "ETag": etag})

    @staticmethod
    def head_of(repo: Repo, rev: str) -> str:
        return repo.head if rev == "main" else repo.tags.get(rev, rev)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while size := int(handler.rfile.readline().strip() or b"0", 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(hub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = _read_body(self)
            path = self.path.split("?")[0]
            hub.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            method = "GET" if self.command == "HEAD" else self.command
            if hub.needs_token(path) and self.headers.get("Authorization") != f"Bearer {hub.token}":
                reply = Reply(401, {"error": "Invalid credentials in Authorization header"})
            else:
                reply = hub.handle(method, path, body)
            data = reply.raw if reply.raw is not None else json.dumps(reply.payload).encode()
            self.send_response(reply.status)
            self.send_header(
                "Content-Type", "application/octet-stream" if reply.raw is not None else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
