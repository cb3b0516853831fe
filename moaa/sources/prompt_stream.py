"""The prompts of a source, read from a file or Hugging Face data set, normalised, filtered and sampled.

    from moaa.config import PromptSourceConfig
    from moaa.sources import load_prompts, stream_prompts   # (from here, via the package)
    prompt_set = load_prompts(PromptSourceConfig(path="configs/prompts/default.jsonl"))  # a list
    with stream_prompts(cfg, spill_dir=work_dir) as prompts:  # any number of prompts
        for prompt in prompts: ...

Each prompt keeps its row's reference (moaa.sources.references: what its answer is checked against),
which is not part of its id. Filters run in this order, each drop counted by reason: bad_row (a row
that cannot be read, with `prompts.on_bad_row: skip`), multimodal (image or audio content parts),
empty (no user text), too_short / too_long (characters of the user turns), secret (the value of a
key, or URL credentials, which moaa would redact in the request and the row), duplicate (same
normalised conversation), near_duplicate (MiniLM cosine >= near_dedup_threshold against an earlier
kept prompt), sampled_out (beyond `limit`). Every drop but sampled_out is also named, with its
location and reason (moaa.sources.drops: `stream.drops`).

Nothing holds all rows. The source is read once, row by row (moaa.sources.readers), and the rows
that pass the filters are spilled to a temporary JSONL file; `limit` then samples positions among
them, and the prompts are read back from the spill (with their ids) as often as a caller iterates.
Memory grows with the number of prompts only by small per-prompt state: a 16-byte digest per kept
prompt (exact de-duplication), the ids handed out (to keep them unique) and the sampled positions
(`limit`); with `near_dedup_threshold` also the kept prompts' embeddings (384 float32 = 1.5 KiB
each), which the comparison needs. A .json file (one list) is parsed whole: use JSONL or parquet
for big sets.

Errors come in the order reading everything first gives: unreadable data (not UTF-8, bad JSON or
CSV) anywhere in the source, then a missing column (over all rows), then the first bad row, then
bad ids (id_column) among the sampled prompts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.fileio import sha256_file
from moaa.public import secret_in
from moaa.rows import Message, Prompt, Reference, prompt_id_of
from moaa.sources.conversations import UnsupportedContent, check_columns, row_messages
from moaa.sources.drops import Drops
from moaa.sources.filters import NearDuplicates, dedup_digest, sample_indices, user_chars, user_text
from moaa.sources.readers import FILE_TYPES, BadRow, RowSource, open_rows, resolve_path
from moaa.sources.references import check_reference_columns, row_reference

__all__ = ["DROP_REASONS", "PromptSet", "PromptStream", "file_fingerprint", "load_prompts", "stream_prompts"]

log = logging.getLogger(__name__)

DROP_REASONS = (
    "bad_row", "multimodal", "empty", "too_short", "too_long", "secret", "duplicate", "near_duplicate", "sampled_out",
)  # fmt: skip


@dataclass
class PromptSet:
    """The prompts to answer, and how they were obtained (for the data set manifest)."""

    prompts: list[Prompt]
    dropped: dict[str, int]  # reason -> count, every reason in DROP_REASONS present
    total_read: int  # rows read from the source
    fingerprint: str  # sha256 of the source data and the filter settings
    source: str  # the file name or hub id, also in each Prompt.source


class _Item(NamedTuple):
    """A filtered row as spilled: one JSON list a line."""

    where: str
    messages: list[Message]
    category: str | None
    given_id: str | None  # the id_column's value, as text
    reference: dict[str, Any] | None  # Reference.to_dict()


@dataclass
class PromptStream:
    """The prompts of a source after filtering and sampling (from `stream_prompts`): iterate, as
    often as needed, to read them back from the spill file; `len()` is their number."""

    dropped: dict[str, int]  # as PromptSet
    total_read: int
    fingerprint: str
    source: str
    cfg: PromptSourceConfig
    spill: Path  # the rows that passed the filters, in source order
    survivors: int  # lines in `spill`
    chosen: list[int] | None  # the positions in `spill` that `limit` sampled (None: all)
    take: int | None = None  # only the first `take` prompts (see head)
    drops: Drops | None = None  # the rows left out, each named (all but sampled_out)

    def __len__(self) -> int:
        kept = self.survivors if self.chosen is None else len(self.chosen)
        return kept if self.take is None else min(kept, self.take)

    def __iter__(self) -> Iterator[Prompt]:
        with closing(self._with_ids()) as prompts:
            yield from islice(prompts, len(self))

    def head(self, count: int | None) -> PromptStream:
        """The first `count` prompts (all for None), as a stream of their own."""
        return self if count is None else replace(self, take=count)

    def _items(self) -> Iterator[_Item]:
        with self.spill.open(encoding="utf-8") as fh:
            if self.chosen is None:
                yield from (_Item(*json.loads(line)) for line in fh)
                return
            wanted = iter(self.chosen)
            position = next(wanted)
            for at, line in enumerate(fh):
                if at == position:
                    yield _Item(*json.loads(line))
                    position = next(wanted, -1)
                    if position < 0:
                        return

    def _with_ids(self) -> Iterator[Prompt]:
        column = self.cfg.id_column
        seen: set[Any] = set()  # 16-byte digests of given ids, or the generated ids as integers
        repeats: dict[int, int] = {}
        for item in self._items():
            if column:
                prompt_id = _given_id(item, column)
                key: Any = hashlib.blake2b(prompt_id.encode(), digest_size=16).digest()
                if key in seen:
                    first = next(other.where for other in self._items() if other.given_id == prompt_id)
                    raise InputError(
                        f"{item.where}: duplicate id '{prompt_id}' (first at {first}); "
                        f"ids in column '{column}' must be unique"
                    )
            else:
                prompt_id = prompt_id_of(item.messages)
                key = int(prompt_id, 16)
                if key in seen:
                    # Only with dedup off can two prompts hash alike; keep ids unique for shards and caches.
                    repeats[key] = repeats.get(key, 1) + 1
                    prompt_id = f"{prompt_id}-{repeats[key]}"
            seen.add(key)
            reference = Reference.from_dict(item.reference) if item.reference else None
            yield Prompt(prompt_id, item.messages, self.source, item.category, reference)


@contextmanager
def stream_prompts(
    cfg: PromptSourceConfig, base_dir: Path | None = None, spill_dir: Path | None = None
) -> Iterator[PromptStream]:
    """The prompts of `cfg.path` or `cfg.hf_dataset` (relative paths resolved against `base_dir`),
    filtered in one pass over the source.

    The rows that pass the filters are spilled to a temporary file in `spill_dir` (the system's
    temp folder by default), removed when the `with` block ends. Every error of the source is
    raised on entering the block, id errors included, before the caller has used any prompt.
    """
    rows = open_rows(cfg, base_dir)
    if spill_dir is not None:
        remove_stale_spills(Path(spill_dir))
    handle, name = tempfile.mkstemp(prefix=SPILL_PREFIX, suffix=SPILL_SUFFIX, dir=spill_dir)
    spill = Path(name)
    owner = os.open(name, os.O_RDONLY)
    fcntl.flock(owner, fcntl.LOCK_EX)  # alive while we are: a later run removes it only once we died
    drops = Drops(spill_dir, rows.label, rows.origin)
    try:
        with open(handle, "w", encoding="utf-8") as fh:
            read, survivors, dropped = _filter(cfg, rows, fh, drops)
        drops.finish()
        chosen = sample_indices(survivors, cfg.limit, cfg.seed)
        dropped["sampled_out"] = 0 if chosen is None else survivors - len(chosen)
        fingerprint = _fingerprint(rows.digest, rows.label, cfg)
        stream = PromptStream(dropped, read, fingerprint, rows.label, cfg, spill, survivors, chosen, drops=drops)
        log.info(
            "%s: read %d rows, kept %d prompts, dropped %s",
            rows.label,
            read,
            len(stream),
            {k: v for k, v in dropped.items() if v} or "none",
        )
        if cfg.id_column:
            for _ in stream:  # duplicate or empty ids fail now, not half-way through the caller's work
                pass
        yield stream
    finally:
        drops.close()
        spill.unlink(missing_ok=True)
        os.close(owner)


SPILL_PREFIX, SPILL_SUFFIX = ".prompts-", ".jsonl.tmp"


def remove_stale_spills(folder: Path, min_age_s: float = 30.0) -> None:
    """Remove spill files of killed runs: unlocked (their owner is dead) and not just created."""
    for path in folder.glob(f"{SPILL_PREFIX}*{SPILL_SUFFIX}"):
        try:
            if time.time() - path.stat().st_mtime < min_age_s:
                continue  # its owner may not have locked it yet
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log.info("removing %s, left by a run that was killed", path)
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a live run's
        finally:
            os.close(fd)


def load_prompts(cfg: PromptSourceConfig, base_dir: Path | None = None) -> PromptSet:
    """All prompts of the source as a list (tests, small sets); `stream_prompts` holds none of them."""
    with stream_prompts(cfg, base_dir) as stream:
        return PromptSet(list(stream), stream.dropped, stream.total_read, stream.fingerprint, stream.source)


def _filter(cfg: PromptSourceConfig, rows: RowSource, spill: TextIO, drops: Drops) -> tuple[int, int, dict[str, int]]:
    """Read every row, write those that pass the filters to `spill` and name those that do not in
    `drops`; (rows read, rows written, drops by reason)."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    columns: set[str] = set()
    seen: set[bytes] = set()
    near: NearDuplicates[str] | None = None
    if cfg.near_dedup_threshold is not None:
        near = NearDuplicates(cfg.near_dedup_threshold)
    read = written = 0
    failure: InputError | None = None

    def drop(where: str, reason: str, detail: str, row: dict[str, Any] | None = None) -> None:
        dropped[reason] += 1
        drops.add(where, reason, detail, _id_text(row, cfg.id_column) if row is not None else None)

    for where, row in rows.rows:
        read += 1
        if isinstance(row, BadRow):  # with on_bad_row: skip, a line the reader could not read
            drop(where, "bad_row", row.error)
            continue
        columns.update(row)
        if failure:
            continue  # the rest is read for errors that come first (unreadable data, missing columns)
        try:
            messages = row_messages(row, where, cfg)
            reference = row_reference(row, where, cfg)
        except UnsupportedContent as exc:
            drop(where, "multimodal", exc.detail, row)
            continue
        except InputError as exc:
            if cfg.on_bad_row == "skip":
                drop(where, "bad_row", str(exc).removeprefix(f"{where}: "), row)
            else:
                failure = exc
            continue
        reason, detail = _drop_reason(messages, cfg)
        if not reason and cfg.dedup:
            digest = dedup_digest(messages)
            if digest in seen:
                reason, detail = "duplicate", "the same conversation as an earlier row (prompts.dedup)"
            seen.add(digest)
        if reason:
            drop(where, reason, detail, row)
            continue
        saved = reference.to_dict() if reference is not None else None
        line = json.dumps(_Item(where, messages, _category(row), _id_text(row, cfg.id_column), saved)) + "\n"
        lines = near.add(line, user_text(messages)) if near else [line]
        _name_near_duplicates(near, drops, cfg)
        spill.writelines(lines)
        written += len(lines)
    check_columns(cfg, columns, rows.origin)
    check_reference_columns(cfg, columns, rows.origin)
    if failure:
        raise failure
    if near:
        lines = near.flush()
        _name_near_duplicates(near, drops, cfg)
        spill.writelines(lines)
        written += len(lines)
        dropped["near_duplicate"] = near.dropped
    return read, written, dropped


def _name_near_duplicates(near: NearDuplicates[str] | None, drops: Drops, cfg: PromptSourceConfig) -> None:
    """Name the near duplicates of the block just compared (spilled lines: their _Item)."""
    if near is None:
        return
    for line in near.take_dropped():
        item = _Item(*json.loads(line))
        detail = f"cosine >= {cfg.near_dedup_threshold:g} with an earlier prompt (prompts.near_dedup_threshold)"
        drops.add(item.where, "near_duplicate", detail, item.given_id)


def _drop_reason(messages: list[Message], cfg: PromptSourceConfig) -> tuple[str, str]:
    """(why a conversation is dropped before de-duplication, what that means here); ("", "") to keep it."""
    if not messages:
        return "empty", "no user text to answer (an empty prompt, or only system or assistant turns)"
    size = user_chars(messages)
    if size < cfg.min_chars:
        return "too_short", f"{size:,} characters of user text, fewer than prompts.min_chars {cfg.min_chars:,}"
    if size > cfg.max_chars:
        return "too_long", f"{size:,} characters of user text, more than prompts.max_chars {cfg.max_chars:,}"
    found = secret_in("\n".join(m["content"] for m in messages))
    if found:
        return "secret", f"holds {found}, which moaa would redact in the request and the row; remove it from the prompt"
    return "", ""


def _category(row: dict[str, Any]) -> str | None:
    category = row.get("category")
    return None if category is None else str(category)


def _id_text(row: dict[str, Any], column: str | None) -> str | None:
    value = row.get(column) if column else None
    return None if value is None else str(value).strip()


def _given_id(item: _Item, column: str) -> str:
    if not item.given_id:
        raise InputError(
            f"{item.where}: empty id in column '{column}'; give every row an id or unset prompts.id_column"
        )
    return item.given_id


def _fingerprint(digest: str, label: str, cfg: PromptSourceConfig) -> str:
    settings = cfg.model_dump(mode="json", exclude={"path", "hf_dataset"})
    blob = json.dumps({"data": digest, "source": label, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_fingerprint(cfg: PromptSourceConfig, base_dir: Path | None = None) -> str | None:
    """The fingerprint `stream_prompts` gives a prompt file, from its bytes alone (no row is parsed);
    None for a data set folder or the Hub, whose fingerprint needs their rows read."""
    if not cfg.path:
        return None
    path = resolve_path(cfg.path, base_dir)
    if not path.is_file() or path.suffix.lower() not in FILE_TYPES:
        return None
    return _fingerprint(sha256_file(path), path.name, cfg)  # a file's digest is that of its bytes (readers)
