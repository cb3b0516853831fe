"""The instruction stage's pure logic (moaa.instructions): Rouge-L, consensus, the writers' filters, seed
files, diversity and the config's shares (a batch's rounds: test_instruction_batches; the pipeline over HTTP:
test_instructions_pipeline)."""

from __future__ import annotations

import json

import pytest

from moaa.config import InstructionsConfig
from moaa.errors import InputError
from moaa.instructions.batches import SHIPPED_SEEDS
from moaa.instructions.consensus import find_consensus, normalise_answer
from moaa.instructions.rouge import lcs_length, rouge_l, tokens
from moaa.instructions.seeds import load_seeds
from moaa.instructions.synthesis import parse_tasks, task_drop_reason


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("The cat sat.", "the CAT sat on the mat", 2 * 1.0 * 0.5 / 1.5),  # LCS 3: precision 1, recall 1/2
        ("a b c d", "d c b a", 0.25),  # LCS 1 of 4 and 4
        ("", "anything", 0.0),
        ("alpha beta", "gamma delta", 0.0),
    ],
)
def test_rouge_l(a, b, expected):
    assert rouge_l(a, b) == pytest.approx(expected)
    assert rouge_l(b, a) == pytest.approx(expected)


def test_rouge_tokens_and_lcs_follow_rouge_score():
    assert tokens("Sort [10, 92] ascendingly!") == ["sort", "10", "92", "ascendingly"]
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4


def test_consensus_takes_an_exact_match_after_normalising():
    found = find_consensus(["Paris is big", "It's Lyon.", "its lyon"])
    assert (found.index, found.agreement, found.exact) == (1, 1.0, True)
    assert normalise_answer("  It's   LYON. ") == "its lyon"


def test_consensus_is_the_answer_closest_to_the_others_and_agreement_the_worst_pair():
    texts = ["red green blue", "red green blue yellow", "red green"]
    found = find_consensus(texts)
    pairs = [rouge_l(texts[0], texts[1]), rouge_l(texts[0], texts[2]), rouge_l(texts[1], texts[2])]
    assert found.index == 0  # 6/7 + 4/5 beats the others' sums
    assert found.agreement == pytest.approx(min(pairs), abs=1e-4) and not found.exact


def test_consensus_by_embedding_uses_the_cosines():
    import numpy as np

    vectors = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.6, 0.8]}
    found = find_consensus(["a", "b", "c"], "embedding", lambda texts: np.array([vectors[t] for t in texts]))
    assert found.index == 1 and found.agreement == pytest.approx(0.6)


def test_fewer_than_two_answers_have_no_consensus():
    assert find_consensus(["only one"]) is None


def test_parse_tasks_reads_blocks_with_multiline_fields():
    reply = (
        "instruction: Sort the list.\ninput: [3, 1]\noutput: [1, 3]\n|EoS|\n\n"
        "Instruction: Write a function.\noutput: def f():\n    return 1\n|EoS|\n"
        "no fields here\n|EoS|"
    )
    assert parse_tasks(reply) == [
        ("Sort the list.", "[3, 1]", "[1, 3]", ""),
        ("Write a function.", "", "def f():\n    return 1", ""),
    ]
    assert parse_tasks("instruction: Add 2 and 3.\noutput: 2 + 3 = 5\nanswer: 5\n|EoS|") == [
        ("Add 2 and 3.", "", "2 + 3 = 5", "5")
    ]


@pytest.mark.parametrize(
    ("instruction", "input_text", "kind", "reason"),
    [
        ("Rate this material.", "", "no-input", "too_short"),
        ("Rate this material now.", "", "no-input", ""),
        (" ".join(["word"] * 151), "", "no-input", "too_long"),
        ("Describe the image below in detail.", "", "no-input", "needs_non_text"),
        ("Draw a cat using ASCII art.", "", "no-input", "needs_non_text"),
        ("(Optional) explain the rule briefly.", "", "no-input", "malformed"),
        ("Extract the dates from the text.", "", "with-input", "missing_input"),
        ("Extract the dates from the text.", "On 3 May...", "with-input", ""),
        ("What is 17 times 3 plus 4?", "", "with-answer", ""),
    ],
)
def test_task_filters(instruction, input_text, kind, reason):
    assert task_drop_reason(instruction, input_text, kind)[0] == reason


def test_the_shipped_seed_set_has_tasks_with_and_without_input_across_categories():
    seeds = load_seeds(SHIPPED_SEEDS)
    assert len(seeds) == 28
    assert sum(s.with_input for s in seeds) == 12
    assert sorted(s.id for s in seeds if s.answer) == ["sum-series", "train-speed", "unit-convert", "word-problem"]
    assert sorted(s.id for s in seeds if s.tests) == ["leap-years", "run-length", "second-largest", "word-frequencies"]
    assert len({s.category for s in seeds}) >= 10


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"seeds.jsonl:2: not JSON"),
        (
            '{"id": "b", "category": "x", "instruction": "", "input": "", "output": "y"}',
            r"seeds.jsonl:2: field 'instruction'",
        ),
        (
            '{"id": "a", "category": "x", "instruction": "i", "input": "", "output": "y"}',
            r"seeds.jsonl:2: duplicate id 'a'",
        ),
        (
            '{"id": "b", "category": "x", "instruction": "i", "input": "", "output": "y", "tests": ["f(1) == 1"], '
            '"signature": "def f(x)"}',
            r"seeds.jsonl:2: field 'tests' must be a non-empty list of `assert ...` lines",
        ),
        (
            '{"id": "b", "category": "x", "instruction": "i", "input": "", "output": "y", "tests": ["assert f(1)"]}',
            r"seeds.jsonl:2: fields 'signature' \(a `def name\(...\)` line\) and 'tests' go together",
        ),
    ],
)
def test_a_bad_seed_line_is_named(tmp_path, line, message):
    path = tmp_path / "seeds.jsonl"
    good = {"id": "a", "category": "x", "instruction": "Do a thing well.", "input": "", "output": "done"}
    path.write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message):
        load_seeds(path)


def test_a_missing_seed_file_says_which_setting(tmp_path):
    with pytest.raises(InputError, match=r"no such seed file; set instructions.seeds"):
        load_seeds(tmp_path / "none.jsonl")


def test_diversity_counts_distinct_ngrams_and_embedding_distance():
    import numpy as np

    from moaa.instructions.diversity import distinct_n, diversity, embedding_distance

    assert distinct_n(["a b a b", "a b"], 1) == 0.3333 and distinct_n(["a b c", "a b d"], 2) == 0.75
    assert diversity([]) == {"count": 0, "distinct_1": 0.0, "distinct_2": 0.0}
    vectors = {"x": [1.0, 0.0], "y": [0.0, 1.0], "z": [1.0, 0.0]}
    assert embedding_distance(["x", "y", "z"], lambda t: np.array([vectors[s] for s in t])) == round(1 - 1 / 3, 4)
    assert embedding_distance(["x"]) is None


@pytest.mark.slow
def test_consensus_by_minilm_embeddings_tells_paraphrases_from_an_unrelated_answer():
    """`agreement.measure: embedding` with the offline MiniLM model moaa ships (moaa.local.embeddings)."""
    close = ["Paris is the capital of France.", "The capital city of France is Paris.", "France's capital: Paris."]
    agreed = find_consensus(close, "embedding")
    mixed = find_consensus([*close[:2], "Photosynthesis turns light into chemical energy."], "embedding")
    assert not agreed.exact and agreed.agreement > 0.7
    assert mixed.agreement < 0.3 and mixed.index in (0, 1)


def test_checkable_and_code_shares_split_the_calls():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"checkable_share 0.5 \+ code_share 0.6 is over 1"):
        InstructionsConfig(n=1, checkable_share=0.5, code_share=0.6)
    assert InstructionsConfig(n=1).code_share == 0.0
