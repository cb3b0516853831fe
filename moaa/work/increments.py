"""Repeated runs that make new data: `prompts.schedule` next / resample, and what each version added.

With `next` or `resample` a config's work folder is named without the prompt source's contents, so
it outlives a source that grows: each run reads the source, leaves out every prompt a shard of that
folder already holds, and appends shards for the new ones (`next`: the first `prompts.limit` in
source order; `resample`: a sample of `prompts.limit` of them, seeded by `prompts.seed` and the
number of earlier batches). The version is written from every shard, so it holds the earlier
versions' rows and the new ones; with no new prompt and every shard done, the run is up to date and
writes no version. `schedule.json` in the work folder lists the batches:

    {"batches": [{"at": "2026-12-06T03:00:00+00:00", "prompts": 20, "shards": ["shard-00000"]}, ...]}

Every version's manifest records the prompts it added over its parent (`prompts_added`), whatever
the schedule: their count, the ids (up to MAX_LISTED) and a sha256 of the sorted ids.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moaa.config import MoaaConfig
from moaa.fileio import write_json_atomic
from moaa.rows import Prompt
from moaa.work.shards import split_into_shards

SCHEDULE_FILE = "schedule.json"
MAX_LISTED = 10_000  # ids listed in a manifest; beyond it, the count and the digest only
_ID = re.compile(r'^\{"prompt_id": "((?:[^"\\]|\\.)*)"')


def pick_new(prompts: Iterable[Prompt], covered: set[str], mode: str, limit: int | None, seed: int) -> list[Prompt]:
    """The prompts no shard holds yet: the first `limit` in source order (next), or a seeded sample
    of `limit` of them kept in source order (resample); all of them when `limit` is None."""
    fresh = (p for p in prompts if p.prompt_id not in covered)
    if mode == "next" or limit is None:
        return list(fresh if limit is None else _first(fresh, limit))
    ids = [p.prompt_id for p in fresh]
    chosen = set(random.Random(seed).sample(ids, min(limit, len(ids))))
    return [p for p in prompts if p.prompt_id in chosen and p.prompt_id not in covered]


def _first(items: Iterator[Prompt], count: int) -> Iterator[Prompt]:
    for index, item in enumerate(items):
        if index >= count:
            return
        yield item


def shard_ids(paths: Iterable[Path]) -> Iterator[str]:
    """The prompt ids of input shard files (read off each line's head: `prompt_id` comes first)."""
    for path in paths:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                found = _ID.match(line)
                yield json.loads(f'"{found.group(1)}"') if found else json.loads(line)["prompt_id"]


def append_shards(folder: Path, prompts: list[Prompt], size: int) -> list[tuple[Path, Path]]:
    """Every (input shard, output folder) of a stage: those on disk, then new ones for `prompts`."""
    existing = sorted((folder / "inputs").glob("shard-*.jsonl"))
    # vars(): Prompt.to_dict's fields in its order (prompt_id first, which shard_ids relies on).
    new = split_into_shards((vars(p) for p in prompts), folder / "inputs", size, start=len(existing))
    return [(p, folder / p.stem) for p in [*existing, *new]]


def batches(work: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((work / SCHEDULE_FILE).read_text(encoding="utf-8"))["batches"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_batch(work: Path, count: int, shards: list[tuple[Path, Path]]) -> None:
    """Add a batch of `count` new prompts in `shards` (the new ones) to schedule.json."""
    entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "prompts": count,
             "shards": [out.name for _, out in shards]}  # fmt: skip
    write_json_atomic(work / SCHEDULE_FILE, {"batches": [*batches(work), entry]})


def prompts_added(config: MoaaConfig, shards: dict[str, list[tuple[Path, Path]]]) -> dict[str, Any]:
    """The prompts of this run's shards that the data set's newest version does not hold (for the
    manifest): {schedule, count, sha256, ids (at most MAX_LISTED), parent}."""
    from moaa.dataset.versions import resolve_version
    from moaa.errors import MoaaError

    mine = dict.fromkeys(shard_ids(p for stage in shards.values() for p, _ in stage))
    try:
        parent = resolve_version(Path(config.output.root), config.name)
        earlier = version_prompt_ids(parent)
    except MoaaError:
        parent, earlier = None, set()
    added = [pid for pid in mine if pid not in earlier]
    digest = hashlib.sha256("\n".join(sorted(added)).encode()).hexdigest()
    record: dict[str, Any] = {"schedule": config.prompts.schedule, "count": len(added), "sha256": digest}
    record["parent"] = f"{config.name}@{parent.name}" if parent is not None else None
    if len(added) <= MAX_LISTED:
        record["ids"] = added
    return record


def version_prompt_ids(version: Path) -> set[str]:
    """Every prompt id a version holds (its sft, dpo and failures rows). A file that cannot be read
    (edited or truncated since: the reason this run is not up to date) holds none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for config in ("sft", "dpo", "failures"):
        for file in sorted((version / "data" / config).glob("*.parquet")):
            try:
                ids.update(pq.read_table(file, columns=["prompt_id"]).column("prompt_id").to_pylist())
            except (pa.ArrowException, OSError, KeyError):
                continue
    return ids
