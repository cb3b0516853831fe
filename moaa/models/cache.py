"""A durable, content-addressed request cache in front of any ChatClient.

The key is a hash of everything that determines an answer: the model, the messages, the resolved
sampling parameters (seed included), n, the response format, and the call's tag, which carries
the version of the prompt template that built the messages. A re-run of a finished config
therefore makes no model calls; changing a judge re-asks only the judge; changing a proposer
re-asks it and everything downstream (their messages change).

Storage is SQLite in WAL mode. Answers are written off the event loop: `put` hands the row to the
file's writer thread (one per file per process), which commits what has gathered in one
transaction every ~50 ms or ~500 rows; reads look at those pending rows first. A crash (SIGKILL
included) loses at most the calls in flight and the batch not yet committed — those are simply
asked again — and never leaves half a row: a transaction lands whole or not at all. `close()`, a
client's `aclose()` and the interpreter's exit flush. Several processes may share a file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from moaa.config import Sampling
from moaa.errors import DamagedFile, MoaaError, storage_error
from moaa.models.client import ChatClient, Completion, Message, request_options
from moaa.models.endpoint_client import merged_sampling
from moaa.models.stats import RunStats, call_cost
from moaa.public import scrub, scrub_text

BATCH_ROWS = 500  # a transaction at most this many rows...
BATCH_S = 0.05  # ...or this old


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class _Writer:
    """The writer thread of one cache file in this process: commits pending rows in batches."""

    def __init__(self, path: Path):
        self.path = path
        self.pending: dict[str, str] = {}  # key -> JSON text, put but not yet committed
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._flushing = 0  # callers waiting in flush(): commit now rather than at the batch's age

    def put(self, key: str, text: str) -> None:
        with self._cond:
            self._raise_error()
            self.pending[key] = text
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="moaa-cache-writer", daemon=True)
                self._thread.start()
            if len(self.pending) in (1, BATCH_ROWS):  # the first row of a batch wakes the idle writer
                self._cond.notify_all()

    def get(self, key: str) -> str | None:
        with self._cond:
            self._raise_error()
            return self.pending.get(key)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every row put so far is committed (or raise the writer's storage error)."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not self.pending or self.error is not None, timeout)
            finally:
                self._flushing -= 1
            self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            with _writers_lock:  # the next cache of this file (a fixed disk) starts afresh
                if _writers.get((os.getpid(), self.path)) is self:
                    del _writers[(os.getpid(), self.path)]
            raise self.error

    def _run(self) -> None:
        try:
            conn = _connect(self.path)
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self.pending)  # idle until a row comes
                    self._cond.wait_for(lambda: len(self.pending) >= BATCH_ROWS or self._flushing, timeout=BATCH_S)
                    batch = dict(self.pending)
                if batch:
                    self._commit(conn, batch)
                with self._cond:
                    for key, text in batch.items():
                        if self.pending.get(key) is text:  # not put again meanwhile
                            del self.pending[key]
                    self._cond.notify_all()
        except (OSError, sqlite3.Error) as exc:
            # Disk full or read-only is run-fatal with one line, raised by the next put, get or flush
            # (every later answer would be lost to the cache too); rows committed so far stay.
            with self._cond:
                self.error = cache_error(self.path, exc)
                self._cond.notify_all()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: dict[str, str]) -> None:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO answers (key, value, created) VALUES (?, ?, ?)",
                [(key, text, now) for key, text in batch.items()],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


_writers: dict[tuple[int, Path], _Writer] = {}  # (pid, file): a forked worker gets its own
_writers_lock = threading.Lock()


def _writer_of(path: Path) -> _Writer:
    with _writers_lock:
        key = (os.getpid(), path.resolve())
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = _Writer(key[1])
        return writer


@atexit.register
def _flush_all() -> None:
    for (pid, _), writer in list(_writers.items()):
        if pid == os.getpid() and writer.pending and writer.error is None:
            try:
                writer.flush(timeout=60)
            except MoaaError:
                pass  # reported by the run already, or nothing left to report it to


def cache_error(path: Path, exc: BaseException) -> MoaaError:
    """One line for a cache that failed: a damaged file (not a database, a malformed or truncated one)
    says to move it aside; a full or read-only disk says to free space (moaa.errors.storage_error)."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return DamagedFile(
            f"cache {path} is damaged ({exc}); move it aside (mv {path} {path}.damaged) or delete it, and its "
            "answers are asked again; or set cache.path to another file",
            path,
        )
    return storage_error(f"cache {path}", exc, "cache.path")


def _check_length(path: Path) -> None:
    """Raise sqlite3.DatabaseError for a file shorter than its own header says (cut by a copy or a
    full disk): SQLite itself finds that only when a read reaches the missing pages, mid-run. Cheap
    (the 100-byte header), unlike PRAGMA quick_check, which reads the whole file."""
    fd = _header_fd(path)
    header = os.pread(fd, 100, 0)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return  # empty (a new cache) or not SQLite's: the connection reports the latter
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the in-header size is meaningful only then
    size = os.fstat(fd).st_size
    if valid and pages and size < pages * page_size:
        raise sqlite3.DatabaseError(f"the file is shorter than its header says: {size} of {pages * page_size} bytes")


_header_fds: dict[Path, int] = {}
_header_lock = threading.Lock()


def _header_fd(path: Path) -> int:
    """A read-only descriptor of `path` that this process never closes. Closing any descriptor of a
    SQLite file drops every lock the process holds on it (POSIX advisory locks belong to the process:
    sqlite.org/howtocorrupt.html, 2.2), so reading the header with open()/close() beside a live
    connection of ours could let another writer in. One kept descriptor per file (a new one when the
    path names another file now; the old one stays open for the same reason)."""
    key = path.resolve()
    with _header_lock:
        fd = _header_fds.get(key)
        if fd is None or os.fstat(fd).st_ino != os.stat(path).st_ino:
            fd = _header_fds[key] = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return fd


class RequestCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._local = threading.local()
            self._conn().execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)"
            )
            self._conn().execute("SELECT key FROM answers LIMIT 1").fetchall()  # a damaged file fails here
            # A checkpoint cut short (a full disk) leaves the file shorter than its new header while the
            # WAL still holds the pages: not damage. Finish what can be finished without waiting, and
            # check the length only when every frame is in the file.
            _, frames, copied = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames == copied:
                _check_length(self.path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise MoaaError(f"cache {self.path}: cannot open ({exc}); set cache.path to a writable file") from None
            raise cache_error(self.path, exc) from None
        except OSError as exc:
            raise MoaaError(f"cache {self.path}: cannot open ({exc}); set cache.path to a writable file") from None
        self._writer = _writer_of(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        text = self._writer.get(key)  # put by this process, not yet committed
        if text is None:
            try:
                row = self._conn().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
            except (OSError, sqlite3.Error) as exc:
                raise cache_error(self.path, exc) from None
            text = row[0] if row else None
        return json.loads(text) if text is not None else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Queue the answer for the writer thread (readable at once by this process's caches)."""
        self.put_text(key, json.dumps(value, ensure_ascii=False))

    def put_text(self, key: str, text: str) -> None:
        """`put` of an answer already serialized (JSON text)."""
        self._writer.put(key, text)

    def flush(self) -> None:
        """Commit every answer put so far (raises the writer's storage error, if it met one)."""
        self._writer.flush()

    close = flush

    def __len__(self) -> int:
        self.flush()
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
        self.endpoint = endpoint = inner.endpoint
        self._prices = (endpoint.price_input_per_mtok, endpoint.price_output_per_mtok) if endpoint else (None, None)
        self._options = request_options(endpoint) if endpoint is not None else {}
        self._unwritten: dict[str, str] = {}  # key -> answer paid for, its journal record not yet written

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
        params = merged_sampling(sampling, self.endpoint)  # the key holds what the endpoint is asked
        key = request_key(self.model, messages, params, n, response_format, tag, self._options)
        unwritten = self._unwritten.get(key)  # answered in this loop step, not yet in the cache
        hit = json.loads(unwritten) if unwritten is not None else self.cache.get(key)
        if hit is None and (journaled := self.stats.prepaid_answer(key)) is not None:
            # Paid for by a killed attempt whose last cache batch was lost: its journal kept the answer.
            self.cache.put_text(key, journaled)
            hit = json.loads(journaled)
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
            stored = {k: v for k, v in vars(completion).items() if k not in ("cached", "extra")}
            text = json.dumps(stored, ensure_ascii=False)
            if scrub_text(text) != text:  # a server echoed a key in an answer: scrub every string of it
                text = json.dumps(scrub(stored), ensure_ascii=False)
            # Journaled (in the OS) with its answer before the cache may commit it: a kill that loses
            # the cache's batch re-reads the answer from the journal, never pays or counts it twice.
            self._unwritten[key] = text
            self.stats.note_paid(key, text, then=lambda: self._put(key, text))
        return completion

    def _put(self, key: str, text: str) -> None:
        self.cache.put_text(key, text)
        if self._unwritten.get(key) is text:
            del self._unwritten[key]

    async def aclose(self) -> None:
        """Commit the answers still queued (off the loop), then close the inner client."""
        import asyncio

        self.stats.write_journal()  # the answers whose record waits go to the cache after it
        await asyncio.to_thread(self.cache.flush)
        if hasattr(self.inner, "aclose"):
            await self.inner.aclose()
