"""References ride with their prompts: read from a source's columns, kept through the input shards,
and never part of the prompt id."""

from __future__ import annotations

import json

import pytest

from moaa.errors import InputError
from moaa.rows import Prompt, Reference, prompt_id_of
from moaa.sources import load_prompts
from moaa.work.run_plan import plan_run
from moaa.work.shards import read_jsonl
from tests.conftest import make_config
from tests.source_helpers import src, user, write_jsonl


def test_instruction_rows_with_tests_or_answer_carry_their_reference_under_an_unchanged_id(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"instruction": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
            {"instruction": "What is 6 x 7?", "answer": 42},
            {"instruction": "Say hello."},
        ],
    )
    prompts = load_prompts(src(path)).prompts
    assert [p.reference for p in prompts] == [
        Reference(tests=("assert add(1, 2) == 3", "assert add(0, 0) == 0")),
        Reference(answer="42"),
        None,
    ]
    assert [p.prompt_id for p in prompts] == [prompt_id_of(p.messages) for p in prompts]


def test_hugging_face_columns_map_to_a_reference(tmp_path):
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Q?", "answer": "48 + 24 = 72\n#### 72"}])
    assert load_prompts(src(gsm8k)).prompts[0].reference == Reference(answer="48 + 24 = 72\n#### 72")
    mbpp = write_jsonl(tmp_path / "mbpp.jsonl", [{"text": "Write f.", "test_list": ["assert f(1) == 2"], "code": "x"}])
    mapped = load_prompts(src(mbpp, prompt_column="text", reference={"tests": "test_list"})).prompts[0]
    assert mapped.reference == Reference(tests=("assert f(1) == 2",))
    ifeval = write_jsonl(
        tmp_path / "ifeval.jsonl",
        [{"prompt": "Write without commas.", "instruction_id_list": ["punctuation:no_comma"],
          "kwargs": [{"num_words": None, "relation": None}]}],
    )  # fmt: skip
    assert load_prompts(src(ifeval)).prompts[0].reference == Reference(
        instructions=("punctuation:no_comma",), kwargs=({},)
    )


def test_a_reference_object_column_carries_sql_with_its_fixture(tmp_path):
    reference = {"sql": "SELECT 1", "schema": "CREATE TABLE t(x);", "ordered": True}
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "reference": reference}])
    got = load_prompts(src(path)).prompts[0].reference
    assert got == Reference(sql="SELECT 1", schema="CREATE TABLE t(x);", ordered=True)
    assert got.kinds == ("sql",)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "tests": 7}, "tests: a string or a list of strings expected"),
        ({"prompt": "q", "reference": {"sql": "SELECT 1"}}, "schema: an SQL reference needs the script"),
        ({"prompt": "q", "instruction_id_list": ["a", "b"], "kwargs": [{}]}, "kwargs: 1 objects for 2 instruction ids"),
        ({"prompt": "q", "reference": {"answr": "1"}}, "reference: unknown field(s) answr"),
        ({"prompt": "q", "tests": "assert f()", "language": "ruby"}, "tests run in python or javascript, not 'ruby'"),
    ],
)
def test_a_malformed_reference_is_one_line_naming_the_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine", "answer": "1"}, row])
    with pytest.raises(InputError) as err:
        load_prompts(src(path))
    assert str(err.value).startswith(f"{path}:2: reference ") and message in str(err.value)
    assert str(err.value).endswith("fix the row or prompts.reference")


def test_a_mapped_reference_column_that_is_missing_is_named(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "tests": "assert True"}])
    with pytest.raises(InputError, match="column 'test_list' not found .*; fix prompts.reference.tests"):
        load_prompts(src(path, reference={"tests": "test_list"}))
    assert load_prompts(src(path, reference={"tests": None})).prompts[0].reference is None  # turned off


def test_shards_keep_the_reference_and_write_prompts_without_one_as_before(tmp_path):
    rows = [{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "Say hi."}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    config = make_config(tmp_path, prompts={"path": str(path)})
    plan = plan_run(config)
    ((shard, _),) = plan.shards["sft"]
    records = list(read_jsonl(shard))
    assert records[0]["reference"] == {"answer": "4"}
    # no `reference` key at all: the shard files of reference-free prompts are byte for byte as before
    hi = [user("Say hi.")]
    assert shard.read_text().splitlines()[1] == json.dumps(
        {"prompt_id": prompt_id_of(hi), "messages": hi, "source": "p.jsonl", "category": None}
    )
    assert [Prompt(**r).reference for r in records] == [Reference(answer="4"), None]
