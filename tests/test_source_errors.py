"""moaa.sources on bad input: one-line errors that name the file, line or row and what to do, and the
rows left out (empty, duplicate, malformed, multimodal, holding a key), each named with its line and
reason. Formats, columns, filters and sampling are in tests/test_sources.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moaa.config import PromptSourceConfig
from moaa.errors import InputError
from moaa.rows import prompt_id_of
from moaa.sources import load_prompts
from tests.source_helpers import src, texts, user, write_jsonl

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
