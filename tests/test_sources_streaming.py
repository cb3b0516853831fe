"""Tests for moaa.sources' streaming reader (issue 8): the same prompts, ids and drops as reading
everything first, the same errors in the same order, line numbers, spill files."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.rows import prompt_id_of
from moaa.sources import load_prompts
from tests.source_helpers import NO_DROPS, assistant, src, texts, user, write_jsonl


def reference(rows: list[dict[str, Any]], cfg: PromptSourceConfig) -> tuple[list[tuple], dict[str, int]]:
    """What the list-based loader gave: (prompt id, last user text, category) in order, and drops by reason."""
    import random

    from moaa.sources.conversations import row_messages
    from moaa.sources.filters import dedup_key, user_chars

    dropped, kept, seen = dict(NO_DROPS), [], set()
    for row in rows:
        messages = row_messages(row, "-", cfg)
        size = user_chars(messages)
        reason = "empty" if not messages else "too_short" if size < cfg.min_chars else ""
        reason = reason or ("too_long" if size > cfg.max_chars else "")
        if not reason and cfg.dedup and dedup_key(messages) in seen:
            reason = "duplicate"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(dedup_key(messages))
        kept.append((messages, None if row.get("category") is None else str(row["category"])))
    if cfg.limit is not None and cfg.limit < len(kept):
        chosen = sorted(random.Random(cfg.seed).sample(range(len(kept)), cfg.limit))
        dropped["sampled_out"] = len(kept) - cfg.limit
        kept = [kept[i] for i in chosen]
    ids, counts = [], {}
    for messages, category in kept:
        base = prompt_id_of(messages)
        counts[base] = counts.get(base, 0) + 1
        ids.append((base if counts[base] == 1 else f"{base}-{counts[base]}", messages[-1]["content"], category))
    return ids, dropped


def mixed_rows(count: int) -> list[dict[str, Any]]:
    """Plain, Alpaca and chat rows with empties, short and long ones, and duplicates up to case and spaces."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        n = i % 37  # repeats: every text comes back, some in another case or spacing
        kind = i % 7
        if kind == 0:
            rows.append({"prompt": f"Question {n}:  why?" if i % 2 else f"question {n}: WHY?", "category": i % 3})
        elif kind == 1:
            rows.append({"prompt": " " * (i % 3)})  # empty
        elif kind == 2:
            rows.append({"instruction": f"Summarise item {n}", "input": "x" * (i % 5)})
        elif kind == 3:
            rows.append({"messages": [user(f"hi {n}"), assistant("hello"), user(f"more {n}")]})
        elif kind == 4:
            rows.append({"prompt": "ab"})  # too short for min_chars=3
        elif kind == 5:
            rows.append({"prompt": "y" * (60 + n)})  # too long for max_chars=80 when n > 20
        else:
            rows.append({"conversations": [{"from": "human", "value": f"Topic {i}"}]})
    return rows


@pytest.mark.parametrize(
    "settings",
    [{}, {"dedup": False}, {"limit": 25, "seed": 7}, {"limit": 40, "seed": 1, "dedup": False}, {"limit": 10_000}],
)
def test_stream_gives_the_list_loaders_prompts_ids_and_drops(tmp_path, settings):
    rows = mixed_rows(1_300)  # more than one parquet batch
    cfg = src(write_jsonl(tmp_path / "p.jsonl", rows), min_chars=3, max_chars=80, **settings)
    expected_ids, expected_drops = reference(rows, cfg)
    s = load_prompts(cfg)
    assert [(p.prompt_id, p.messages[-1]["content"], p.category) for p in s.prompts] == expected_ids
    assert s.dropped == expected_drops and s.total_read == len(rows)
    assert sum(s.dropped.values()) + len(s.prompts) == len(rows)
    # one JSON list gives the same; parquet (read in batches) gives what its whole table gives
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    table_rows = pq.read_table(tmp_path / "p.parquet").to_pylist()
    for other, expected in (("p.json", reference(rows, cfg)), ("p.parquet", reference(table_rows, cfg))):
        got = load_prompts(cfg.model_copy(update={"path": str(tmp_path / other)}))
        assert ([(p.prompt_id, p.messages[-1]["content"], p.category) for p in got.prompts], got.dropped) == expected


def test_fingerprint_hashes_the_file_bytes_as_before(tmp_path):
    """Run folders are named by it: a streamed digest must equal sha256 of the whole file."""
    import hashlib

    from moaa.sources.prompt_stream import _fingerprint

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\r\n\r\n{"prompt": "b"}')  # BOM, CRLF, no final newline
    cfg = src(path, limit=1)
    assert load_prompts(cfg).fingerprint == _fingerprint(hashlib.sha256(path.read_bytes()).hexdigest(), "p.jsonl", cfg)


def test_stream_reads_back_again_and_cleans_up(tmp_path):
    from moaa.sources import stream_prompts

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(9)])
    spill = tmp_path / "spill"
    spill.mkdir()
    with stream_prompts(src(path, limit=6, seed=2), spill_dir=spill) as prompts:
        assert len(list(spill.iterdir())) == 1  # the survivors, not a list in memory
        first = [p.prompt_id for p in prompts]
        assert len(prompts) == 6 and [p.prompt_id for p in prompts] == first
        assert [p.prompt_id for p in prompts.head(4)] == first[:4] and len(prompts.head(4)) == 4
        assert len(prompts.head(50)) == 6 and prompts.head(None) is prompts
    assert list(spill.iterdir()) == []
    dup = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "id": 1}, {"prompt": "b", "id": 1}])
    with pytest.raises(InputError, match=r"d\.jsonl:2: duplicate id '1' \(first at .*d\.jsonl:1\)"):
        with stream_prompts(src(dup, id_column="id"), spill_dir=spill):
            pytest.fail("an id error must come before the prompts are used")
    assert list(spill.iterdir()) == []


def test_error_order_is_that_of_reading_everything_first(tmp_path):
    path = tmp_path / "p.jsonl"
    # a bad row (line 2), then bad JSON (line 3), then bytes that are not UTF-8 (line 4): UTF-8 first
    path.write_bytes(b'{"prompt": "a"}\n{"messages": 5}\n{oops}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:4: not UTF-8 text"):
        load_prompts(src(path))
    path.write_bytes(b'{"prompt": "a"}\n{"messages": 5}\n{oops}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:3: invalid JSON"):
        load_prompts(src(path))
    path.write_bytes(b'{"prompt": "a"}\n{"messages": 5}\n')
    with pytest.raises(InputError, match=r"p\.jsonl: column 'uid' not found \(columns found: messages, prompt\)"):
        load_prompts(src(path, id_column="uid"))
    with pytest.raises(InputError, match=r"p\.jsonl:2: malformed messages"):
        load_prompts(src(path))
    (tmp_path / "c.csv").write_bytes(b'prompt\n"open\nx\n\xff\n')
    with pytest.raises(InputError, match=r"c\.csv:4: not UTF-8 text \(byte offset 15\)"):
        load_prompts(src(tmp_path / "c.csv"))


def test_line_ends_and_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [b'{"prompt": "a"}\r', b'{"prompt": "b"}\r\n', b"\r\n", b'{"prompt": "c\\u2028d"}\n']
    path.write_bytes(b"".join(lines) + b'{"prompt": "e\xe2\x80\xa8f"}\n{x}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:6: invalid JSON"):  # bare CR and CRLF each end a line
        load_prompts(src(path))
    path.write_bytes(path.read_bytes()[: -len(b"{x}\n")])
    # a raw U+2028 inside a string is part of the line (str.splitlines used to cut it in two)
    assert texts(load_prompts(src(path))) == ["a", "b", "c\u2028d", "e\u2028f"]
    (tmp_path / "c.csv").write_bytes(b'prompt\r"two\rlines"\rthird\r')
    assert texts(load_prompts(src(tmp_path / "c.csv"))) == ["two\rlines", "third"]


def test_near_duplicates_stream_block_by_block(tmp_path, monkeypatch):
    import numpy as np

    import moaa.local.embeddings

    calls: list[int] = []

    def fake_embed(texts: list[str]) -> np.ndarray:  # "group g": one direction per group
        calls.append(len(texts))
        vectors = np.zeros((len(texts), 8), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, int(text.split()[1]) % 8] = 1.0
        return vectors

    monkeypatch.setattr(moaa.local.embeddings, "embed", fake_embed)
    monkeypatch.setattr("moaa.sources.filters._BLOCK", 4)
    rows = [{"prompt": f"group {g} item {i}"} for i, g in enumerate([0, 1, 0, 2, 3, 1, 4, 0, 9, 5, 5])]
    s = load_prompts(src(write_jsonl(tmp_path / "p.jsonl", rows), near_dedup_threshold=0.9))
    assert texts(s) == ["group 0 item 0", "group 1 item 1", "group 2 item 3", "group 3 item 4", "group 4 item 6",
                        "group 5 item 9"]  # fmt: skip
    assert s.dropped == NO_DROPS | {"near_duplicate": 5} and calls == [4, 4, 3]  # group 9 = group 1 (mod 8)
    calls.clear()
    assert texts(load_prompts(src(write_jsonl(tmp_path / "one.jsonl", rows[:1]), near_dedup_threshold=0.9)))
    assert calls == []  # a single prompt needs no model


def test_spill_files_of_killed_runs_are_removed_and_a_live_runs_kept(tmp_path):
    """A spill file whose owner died (no flock on it) goes on the next stream; a live owner's stays."""
    import fcntl
    import os
    import subprocess
    import sys

    from moaa.sources import stream_prompts

    stale = tmp_path / ".prompts-dead0001.jsonl.tmp"
    stale.write_text('["left by a SIGKILL"]\n')
    os.utime(stale, (1, 1))
    live = tmp_path / ".prompts-live0001.jsonl.tmp"
    live.write_text("")
    os.utime(live, (1, 1))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('HELD', flush=True); "
                               "time.sleep(60)", str(live)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "HELD\n"
        prompts = tmp_path / "p.jsonl"
        prompts.write_text(json.dumps({"prompt": "Name three uses of a paperclip."}) + "\n")
        with stream_prompts(PromptSourceConfig(path=str(prompts)), spill_dir=tmp_path) as stream:
            assert len(stream) == 1
            (mine,) = set(tmp_path.glob(".prompts-*.tmp")) - {live, stale}
            fd = os.open(mine, os.O_RDONLY)  # our own spill is locked while the stream is open
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.glob(".prompts-*")) == [live.name]
