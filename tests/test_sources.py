"""Tests for moaa.sources: formats, column styles, filters, sampling and one-line errors."""

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


# ---------------------------------------------------------------- named drops, bad rows, multimodal, secrets


def named_drops(cfg: PromptSourceConfig, spill: Path) -> tuple[list[str], list[dict]]:
    """(the kept prompts' last user texts, the named drops) of a source."""
    from moaa.sources import stream_prompts
    from moaa.work.shards import read_jsonl

    with stream_prompts(cfg, spill_dir=spill) as stream:
        kept = [p.messages[-1]["content"] for p in stream]
        drops = list(read_jsonl(stream.drops.path)) if stream.drops.path else []
    assert list(spill.glob(".prompts-*")) == []  # both spill files are gone
    return kept, drops


def test_every_drop_is_named_with_its_line_and_reason(tmp_path):
    """A 2 MB prompt, an empty instruction and a system-only conversation once left only counts."""
    rows = [
        {"prompt": "Keep me."},
        {"prompt": "x" * 2_000_000},
        {"instruction": ""},
        {"messages": [{"role": "system", "content": "Be brief."}]},
        {"prompt": "Keep me."},
        {"prompt": "ok"},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    kept, drops = named_drops(src(path, min_chars=3), tmp_path)
    assert kept == ["Keep me."]
    assert [(d["stage"], d["reason"], d["error"], d["transient"]) for d in drops] == [
        ("prompts", "too_long", "p.jsonl:2: 2,000,000 characters of user text, more than prompts.max_chars 16,000",
         False),
        ("prompts", "empty", "p.jsonl:3: no user text to answer (an empty prompt, or only system or assistant turns)",
         False),
        ("prompts", "empty", "p.jsonl:4: no user text to answer (an empty prompt, or only system or assistant turns)",
         False),
        ("prompts", "duplicate", "p.jsonl:5: the same conversation as an earlier row (prompts.dedup)", False),
        ("prompts", "too_short", "p.jsonl:6: 2 characters of user text, fewer than prompts.min_chars 3", False),
    ]  # fmt: skip
    ids = [d["prompt_id"] for d in drops]
    assert len(set(ids)) == 5 and prompt_id_of([user("Keep me.")]) not in ids  # a duplicate is not the kept row
    assert str(tmp_path) not in json.dumps(drops)  # named by the file's name: drops are written into data


def test_bad_rows_stop_at_the_first_or_are_skipped_counted_and_named(tmp_path):
    """A 100-row file with 3 malformed lines once stopped at the first, with no way to skip them."""
    lines = [json.dumps({"prompt": f"Question {i}?"}) for i in range(100)]
    lines[10], lines[50], lines[90] = '{"prompt": "torn', "[1, 2]", '{"messages": 5}'
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"big\.jsonl:11: invalid JSON \(Unterminated string"):
        load_prompts(src(path))
    kept, drops = named_drops(src(path, on_bad_row="skip"), tmp_path)
    assert len(kept) == 97
    assert [(d["reason"], d["error"]) for d in drops] == [
        ("bad_row", "big.jsonl:11: invalid JSON (Unterminated string starting at; column 12); fix or remove the line"),
        ("bad_row", "big.jsonl:51: expected a JSON object, got a list; write one object per line"),
        ("bad_row", "big.jsonl:91: malformed messages: expected a list of turns, got int"),
    ]
    assert load_prompts(src(path, on_bad_row="skip")).dropped["bad_row"] == 3
    path.write_bytes(path.read_bytes().replace(b"Question 20?", b"Question \xe9?"))  # not UTF-8 either
    kept, drops = named_drops(src(path, on_bad_row="skip"), tmp_path)
    assert len(kept) == 96 and drops[1]["error"].startswith("big.jsonl:21: not UTF-8 text (byte offset ")


def test_a_multimodal_row_is_left_out_and_named_not_the_run(tmp_path):
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    rows = [
        {"messages": [user("Describe the sky.")]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in it?"}, image]}]},
    ]
    kept, drops = named_drops(src(write_jsonl(tmp_path / "m.jsonl", rows)), tmp_path)
    assert kept == ["Describe the sky."]
    assert [(d["reason"], d["error"]) for d in drops] == [
        ("multimodal", "m.jsonl:2: turn 1 holds image_url content; moaa asks text models, and its text parts alone "
                       "would be another question, so the row is left out"),
    ]  # fmt: skip


def test_a_prompt_holding_a_key_is_left_out_not_rewritten(tmp_path, monkeypatch):
    """The shard files and the request were once scrubbed to <redacted:...> without a word."""
    monkeypatch.setenv("MOAA_PROMPT_TOKEN", "tok-in-a-prompt-0123")
    rows = [{"prompt": "Hello there."}, {"prompt": "My key is tok-in-a-prompt-0123, is it safe?"},
            {"prompt": "Fetch https://me:hunter2@example.com/x please."}]  # fmt: skip
    kept, drops = named_drops(src(write_jsonl(tmp_path / "k.jsonl", rows)), tmp_path)
    assert kept == ["Hello there."]
    assert [(d["reason"], d["error"]) for d in drops] == [
        ("secret", "k.jsonl:2: holds the value of $MOAA_PROMPT_TOKEN, which moaa would redact in the request and "
                   "the row; remove it from the prompt"),
        ("secret", "k.jsonl:3: holds credentials in a URL (user:password@), which moaa would redact in the request "
                   "and the row; remove it from the prompt"),
    ]  # fmt: skip
    assert "tok-in-a-prompt" not in json.dumps(drops) and "hunter2" not in json.dumps(drops)
