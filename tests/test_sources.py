"""Tests for moaa.sources: formats, column styles, filters, sampling and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.rows import prompt_id_of
from moaa.sources import DROP_REASONS, load_prompts

ROOT = Path(__file__).resolve().parents[1]
NO_DROPS = dict.fromkeys(DROP_REASONS, 0)


def src(path: Path | str, **kw: Any) -> PromptSourceConfig:
    return PromptSourceConfig(path=str(path), **kw)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def texts(prompt_set) -> list[str]:
    return [p.messages[-1]["content"] for p in prompt_set.prompts]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------- formats and columns


def test_default_prompt_set():
    s = load_prompts(src("configs/prompts/default.jsonl"), base_dir=ROOT)
    assert len(s.prompts) >= 100
    assert sum(1 for p in s.prompts if sum(m["role"] == "user" for m in p.messages) > 1) >= 5
    assert s.source == "default.jsonl" and s.total_read == 130 and s.dropped == NO_DROPS
    assert {p.category for p in s.prompts} >= {"writing", "coding", "math"}
    assert all(p.messages[-1]["role"] == "user" for p in s.prompts)
    assert len({p.prompt_id for p in s.prompts}) == len(s.prompts)


def test_jsonl_plain_and_messages(tmp_path):
    rows = [
        {"id": "a", "category": "math", "prompt": "  What is 2+2?\n"},
        {"category": "chat", "messages": [user("Hi"), assistant("Hello!"), user("Tell me a joke."), assistant("...")]},
        {"question": "Why is the sky blue?"},
    ]
    s = load_prompts(src(write_jsonl(tmp_path / "p.jsonl", rows)))
    first, second, third = s.prompts
    assert first.messages == [user("What is 2+2?")]
    assert first.category == "math" and first.source == "p.jsonl"
    assert first.prompt_id == prompt_id_of([user("What is 2+2?")])
    # the trailing assistant turn is dropped; earlier ones are kept for regeneration
    assert second.messages == [user("Hi"), assistant("Hello!"), user("Tell me a joke.")]
    assert third.messages == [user("Why is the sky blue?")] and third.category is None
    assert s.total_read == 3 and s.dropped == NO_DROPS


@pytest.mark.parametrize("wrap", [False, True])
def test_json_list_or_data(tmp_path, wrap):
    rows = [{"prompt": "one"}, {"instruction": "two"}]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"data": rows} if wrap else rows), encoding="utf-8")
    assert texts(load_prompts(src(path))) == ["one", "two"]


def test_csv_plain_and_messages_column(tmp_path):
    path = tmp_path / "p.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category", "chat"])
        w.writerow(["Line one\nline two", "x", json.dumps([user("u1"), assistant("a1"), user("u2")])])
        w.writerow(["Second", "y", json.dumps([user("only")])])
    s = load_prompts(src(path, prompt_column="text"))
    assert texts(s) == ["Line one\nline two", "Second"]
    assert [p.category for p in s.prompts] == ["x", "y"]
    s = load_prompts(src(path, messages_column="chat"))
    assert [p.messages for p in s.prompts] == [[user("u1"), assistant("a1"), user("u2")], [user("only")]]


def test_parquet_alpaca_instruction_with_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    table = pa.table({"instruction": ["Summarise the text.", "Say hi."], "input": ["Cats sleep a lot.", ""]})
    pq.write_table(table, path)
    s = load_prompts(src(path))
    assert texts(s) == ["Summarise the text.\n\nCats sleep a lot.", "Say hi."]


def test_sharegpt_conversations(tmp_path):
    convo = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Capital of France?"},
        {"from": "gpt", "value": "Paris."},
        {"from": "user", "value": "And of Spain?"},
        {"from": "chatgpt", "value": "Madrid."},
    ]
    s = load_prompts(src(write_jsonl(tmp_path / "sg.jsonl", [{"conversations": convo}])))
    assert s.prompts[0].messages == [
        {"role": "system", "content": "Be brief."},
        user("Capital of France?"),
        assistant("Paris."),
        user("And of Spain?"),
    ]
    renamed = write_jsonl(
        tmp_path / "sg2.jsonl", [{"turns": [{"from": "human", "value": "Q"}, {"from": "bing", "value": "A"}]}]
    )
    assert load_prompts(src(renamed, conversations_column="turns")).prompts[0].messages == [user("Q")]


def test_system_prompt_prepended_only_when_missing(tmp_path):
    rows = [{"prompt": "plain"}, {"messages": [{"role": "system", "content": "Own."}, user("q")]}]
    s = load_prompts(src(write_jsonl(tmp_path / "p.jsonl", rows), system_prompt="Be kind."))
    assert s.prompts[0].messages == [{"role": "system", "content": "Be kind."}, user("plain")]
    assert s.prompts[1].messages == [{"role": "system", "content": "Own."}, user("q")]


def test_id_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"uid": 7, "prompt": "a"}, {"uid": "x", "prompt": "b"}])
    assert [p.prompt_id for p in load_prompts(src(path, id_column="uid")).prompts] == ["7", "x"]
    dup = write_jsonl(tmp_path / "d.jsonl", [{"uid": 1, "prompt": "a"}, {"uid": 1, "prompt": "b"}])
    with pytest.raises(InputError, match=r"d\.jsonl:2: duplicate id '1' \(first at .*d\.jsonl:1\)"):
        load_prompts(src(dup, id_column="uid"))


# ---------------------------------------------------------------- filters


def test_empty_and_exact_duplicates(tmp_path):
    rows = [
        {"prompt": "Hello   World"},
        {"prompt": "Hello World"},  # same after whitespace collapse
        {"prompt": "HELLO\tworld "},  # same after casefold too
        {"prompt": "Hello world!"},  # punctuation differs: kept
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": None},
        {"messages": [assistant("only an assistant turn")]},
        {"messages": [user("hello world"), assistant("x"), user("more")]},  # different conversation
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    s = load_prompts(src(path))
    assert texts(s) == ["Hello   World", "Hello world!", "more"]
    assert s.dropped == NO_DROPS | {"empty": 4, "duplicate": 2}
    assert s.total_read == 9
    kept_all = load_prompts(src(path, dedup=False))
    assert len(kept_all.prompts) == 5
    ids = [p.prompt_id for p in kept_all.prompts]
    assert len(set(ids)) == 5 and ids[1] == ids[0] + "-2"  # same whitespace-normalised text


def test_length_limits_count_user_turns_only(tmp_path):
    rows = [
        {"prompt": "abc"},  # 3
        {"prompt": "abcdefghij"},  # 10
        {"prompt": "x" * 11},  # 11
        {"messages": [user("abcde"), assistant("a" * 100), user("fghij")]},  # 10 user chars
    ]
    s = load_prompts(src(write_jsonl(tmp_path / "p.jsonl", rows), min_chars=4, max_chars=10, system_prompt="s" * 50))
    assert [p.messages[1]["content"] for p in s.prompts] == ["abcdefghij", "abcde"]
    assert s.dropped == NO_DROPS | {"too_short": 1, "too_long": 1}


def test_seeded_limit_is_stable_and_ordered(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"prompt number {i}"} for i in range(50)])
    a = load_prompts(src(path, limit=10, seed=3))
    b = load_prompts(src(path, limit=10, seed=3))
    c = load_prompts(src(path, limit=10, seed=4))
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    order = [int(t.split()[-1]) for t in texts(a)]
    assert order == sorted(order) and len(order) == 10
    assert a.dropped == NO_DROPS | {"sampled_out": 40}
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert load_prompts(src(path, limit=60)).dropped["sampled_out"] == 0


def test_fingerprint_follows_content_and_settings(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    first = load_prompts(src(path)).fingerprint
    assert len(first) == 64 and load_prompts(src(path)).fingerprint == first
    assert load_prompts(src(path, max_chars=100)).fingerprint != first
    write_jsonl(path, [{"prompt": "a"}, {"prompt": "c"}])
    assert load_prompts(src(path)).fingerprint != first


@pytest.mark.slow
def test_near_duplicates_removed_with_minilm(tmp_path):
    rows = [
        {"prompt": "How do I bake a loaf of sourdough bread at home?"},
        {"prompt": "What is the recipe for baking sourdough bread at home?"},
        {"prompt": "Explain how interest rates affect the stock market."},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    s = load_prompts(src(path, near_dedup_threshold=0.75))
    assert texts(s) == [rows[0]["prompt"], rows[2]["prompt"]]
    assert s.dropped == NO_DROPS | {"near_duplicate": 1}
    assert load_prompts(src(path, near_dedup_threshold=0.99)).dropped["near_duplicate"] == 0


# ---------------------------------------------------------------- Hugging Face data sets


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_saved_dataset_folder(tmp_path, hf_cache):
    rows = [
        {"messages": [user("hi"), assistant("yo"), user("bye")], "category": "chat"},
        {"messages": [user("solo")], "category": "x"},
    ]
    hf_cache.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    s = load_prompts(src(tmp_path / "saved"))
    assert [p.messages for p in s.prompts] == [[user("hi"), assistant("yo"), user("bye")], [user("solo")]]
    assert s.source == "saved" and [p.category for p in s.prompts] == ["chat", "x"]
    # a DatasetDict folder: the split is chosen; the same folder given as hf_dataset
    hf_cache.DatasetDict({"test": hf_cache.Dataset.from_list([{"prompt": "q"}])}).save_to_disk(str(tmp_path / "dd"))
    s = load_prompts(PromptSourceConfig(hf_dataset="dd", split="test"), base_dir=tmp_path)
    assert texts(s) == ["q"] and s.source == "dd"
    with pytest.raises(InputError, match=r"dd: no split 'train' \(splits found: test\); fix prompts.split"):
        load_prompts(PromptSourceConfig(hf_dataset=str(tmp_path / "dd")))


def test_parquet_folder_via_load_dataset(tmp_path, hf_cache):
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    hf_cache.Dataset.from_list([{"question": "q1"}, {"question": "q2"}]).to_parquet(str(folder / "train-00000.parquet"))
    s = load_prompts(PromptSourceConfig(hf_dataset=str(tmp_path / "pq")))
    assert texts(s) == ["q1", "q2"] and s.total_read == 2
    assert load_prompts(src(tmp_path / "pq")).source == "pq"


def test_hub_dataset_offline_error(hf_cache, monkeypatch):
    monkeypatch.setattr(hf_cache.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        InputError,
        match=r"hf_dataset 'someone/no-such-set': cannot be loaded without network"
        r".*must be a local path or already in the Hugging Face cache",
    ):
        load_prompts(PromptSourceConfig(hf_dataset="someone/no-such-set"))


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(
        InputError,
        match=r"nope\.jsonl: prompt file not found \(relative paths are resolved against .*\); fix prompts.path",
    ):
        load_prompts(src("nope.jsonl"), base_dir=tmp_path)


@pytest.mark.parametrize("name, content", [("e.jsonl", "\n  \n"), ("e.json", "[]"), ("e.csv", "prompt\n")])
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=rf"{name}: the file holds no prompts"):
        load_prompts(src(tmp_path / name))


def test_invalid_json_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": "a" "b"}\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_prompts(src(path))
    assert str(err.value) == f"{path}:3: invalid JSON (Expecting ',' delimiter; column 16); fix or remove the line"


def test_invalid_json_file_and_non_object_line(tmp_path):
    (tmp_path / "p.json").write_text('[\n{"prompt": 1},\n{oops}\n]', encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.json:3: invalid JSON \(Expecting property name"):
        load_prompts(src(tmp_path / "p.json"))
    write_jsonl(tmp_path / "l.jsonl", [{"prompt": "a"}, ["not", "an", "object"]])
    with pytest.raises(InputError, match=r"l\.jsonl:2: expected a JSON object, got a list"):
        load_prompts(src(tmp_path / "l.jsonl"))


def test_missing_columns_lists_found(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": 1}])
    with pytest.raises(
        InputError,
        match=r"p\.jsonl: no prompt column \(expected one of messages, conversations, prompt, instruction, "
        r"question, input; columns found: label, text\)",
    ):
        load_prompts(src(path))
    with pytest.raises(
        InputError, match=r"p\.jsonl: column 'body' not found \(columns found: label, text\); fix prompts.prompt_column"
    ):
        load_prompts(src(path, prompt_column="body"))
    mixed = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a"}, {"text": "b"}])
    with pytest.raises(InputError, match=r"m\.jsonl:2: no prompt column .*columns found: text\)"):
        load_prompts(src(mixed))


@pytest.mark.parametrize(
    "messages, expected",
    [
        ([{"role": "user"}], "malformed messages: turn 1 needs 'role' and 'content'"),
        ([user("a"), {"role": "bot", "content": "b"}], "malformed messages: turn 2 has role 'bot'"),
        ("not a list", "column 'messages' holds text that is not a JSON list of turns"),
        ({"role": "user"}, "malformed messages: expected a list of turns, got dict"),
        ([{"role": "user", "content": 5}], "malformed messages: turn 1 content must be text, got int"),
    ],
)
def test_malformed_messages_names_the_row(tmp_path, messages, expected):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"messages": messages}])
    with pytest.raises(InputError) as err:
        load_prompts(src(path))
    assert str(err.value).startswith(f"{path}:2: {expected}")


def test_malformed_sharegpt_and_parquet_row_number(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "alien", "value": "x"}]}])
    with pytest.raises(InputError, match=r"s\.jsonl:1: malformed conversations: turn 1 is from 'alien'"):
        load_prompts(src(path))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"messages": [[{"role": "user", "content": "ok"}], [{"role": "robot", "content": "x"}]]}),
        tmp_path / "m.parquet",
    )
    with pytest.raises(InputError, match=r"m\.parquet: row 2: malformed messages: turn 1 has role 'robot'"):
        load_prompts(src(tmp_path / "m.parquet"))


def test_non_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError) as err:
        load_prompts(src(path))
    assert str(err.value) == f"{path}:2: not UTF-8 text (byte offset 32); save the file as UTF-8"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "caf\xe9"}\n')  # the BOM is counted in the offset
    with pytest.raises(InputError, match=r"p\.jsonl:1: not UTF-8 text \(byte offset 18\)"):
        load_prompts(src(path))
    path.write_bytes('\ufeff{"prompt": "café"}\n'.encode())
    assert texts(load_prompts(src(path))) == ["café"]


def test_unknown_extension(tmp_path):
    (tmp_path / "p.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"p\.txt: unknown prompt file type '\.txt'; use \.jsonl, \.json, \.csv or \.parquet"
    ):
        load_prompts(src(tmp_path / "p.txt"))


def test_bad_parquet(tmp_path):
    (tmp_path / "p.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"p\.parquet: not a readable parquet file"):
        load_prompts(src(tmp_path / "p.parquet"))


# ---------------------------------------------------------------- streaming (issue 8)


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

    from moaa.sources import _fingerprint

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
