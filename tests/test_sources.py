"""Tests for moaa.sources: formats, column styles, filters, sampling and Hugging Face data sets. Bad input
(one-line errors, named drops) is in tests/test_source_errors.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.rows import prompt_id_of
from moaa.sources import load_prompts
from tests.source_helpers import NO_DROPS, assistant, src, texts, user, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


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
