"""The instruction stage's logic (moaa.instructions): Rouge-L, consensus, the writers' filters, seed files,
and a batch's rounds with a deterministic fake client (the pipeline over HTTP: test_instructions_pipeline)."""

from __future__ import annotations

import asyncio
import json

import pytest

from moaa.config import AgentConfig, InstructionsConfig
from moaa.errors import InputError
from moaa.instructions.batches import SHIPPED_SEEDS
from moaa.instructions.consensus import find_consensus, normalise_answer
from moaa.instructions.rouge import lcs_length, rouge_l, tokens
from moaa.instructions.seeds import SeedTask, load_seeds
from moaa.instructions.synthesis import Agent, Synthesis, parse_tasks, planned_calls, task_drop_reason
from moaa.models.client import CallError
from moaa.prompts.instructions import WRITE_WITH_INPUT
from tests.fakes import FakeClient


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


# ---------------------------------------------------------------- a batch with a fake client

SEEDS = [
    SeedTask("s-in", "extraction", "List the colours named in the text.", "red car, blue sky", "red, blue"),
    SeedTask("s-out", "advice", "Suggest a quick healthy breakfast.", "", "Oats with fruit."),
]
WORDS = "amber basil cobalt dune ember fjord garnet harbor iris jade kelp lumen moss nectar onyx pearl".split()


def writer_reply(call, index: int) -> str:
    """The tasks of the writer's call `index`: the first copies a seed, the second repeats a task of the
    first call, a third is about a 'quarrel' (its answers disagree); the rest are new."""
    with_input = "\ninput: " in call.last_user
    blocks = []
    for k in range(4):
        if k == 0:
            instruction = "List the colours named in the text." if with_input else "Suggest a quick healthy breakfast."
        elif k == 1 and index > 0:
            instruction = "Explain amber basil cobalt dune to a child."  # written by the first call too
        elif k == 2:
            instruction = f"Settle the quarrel between {WORDS[index % 16]} and {WORDS[(index + 5) % 16]} fairly."
        else:
            instruction = f"Explain {' '.join(f'c{index}t{k}w{j}' for j in range(6))} to a child."
        blocks.append(f"instruction: {instruction}\n" + ("input: some text\n" if with_input else "") + "output: ok")
    return "\n|EoS|\n".join(blocks) + "\n|EoS|"


def fake_agents(fail_answerer: bool = False):
    writer = FakeClient("w", model="writer-model")
    writer.responder = lambda call: writer_reply(call, len(writer.calls) - 1)

    def answer(call):
        if "quarrel" in call.last_user:
            return f"verdict {call.seed}"  # every answerer says something else
        return "ok"

    answerers = [FakeClient(f"a{i}", model=f"answer-model{i}", responder=answer) for i in range(2)]
    if fail_answerer:
        answerers[1].responder = lambda call: CallError("server_error", "boom")
    return (
        [Agent("writer0", AgentConfig(endpoint="w"), writer)],
        [Agent(f"answerer{i}", AgentConfig(endpoint=f"a{i}"), c) for i, c in enumerate(answerers)],
    )


def run_batch(cfg: InstructionsConfig, earlier=(), fail_answerer=False):
    writers, answerers = fake_agents(fail_answerer)
    synthesis = Synthesis(cfg, SEEDS, writers, answerers, seed=cfg.seed, earlier=list(earlier))
    return asyncio.run(synthesis.run()), writers[0].client


def test_a_batch_keeps_n_tasks_and_names_every_drop():
    cfg = InstructionsConfig(n=5, per_call=4, agreement={"threshold": 0.5})
    outcome, writer = run_batch(cfg)
    reasons = [d["reason"] for d in outcome.drops]
    assert len(outcome.kept) == 5
    assert reasons.count("similar_to_seed") == outcome.rounds  # each call's copy of a seed
    assert "similar_to_earlier" in reasons and "disagreement" in reasons
    assert outcome.written == len(outcome.kept) + len(outcome.drops)  # every task written is kept or named
    instructions = [row["instruction"] for row in outcome.kept]
    assert len(set(instructions)) == len(instructions)
    for row in outcome.kept:
        assert row["agreement"] == 1.0 and row["exact_match"] and row["consensus_answer"] == "ok"
        assert row["seeds"] and row["writer"] == "writer0" and row["answerers"][0] == "writer0 (writer)"
    assert len(writer.calls) == outcome.rounds
    assert writer.calls[0].tag in (
        WRITE_WITH_INPUT.tag("instructions", "writer"),
        "instructions.writer.write-no-input@v2",
    )


def test_a_task_too_close_to_an_earlier_batch_is_dropped():
    cfg = InstructionsConfig(n=2, per_call=4)
    first, _ = run_batch(cfg)
    again, _ = run_batch(cfg, earlier=[row["instruction"] for row in first.kept])
    assert not {r["instruction"] for r in again.kept} & {r["instruction"] for r in first.kept}
    assert "similar_to_earlier" in [d["reason"] for d in again.drops]


def test_answers_that_fail_leave_too_few_to_agree():
    cfg = InstructionsConfig(n=1, per_call=4, max_rounds=1, input_share=0)
    writers, answerers = fake_agents(fail_answerer=True)
    writers[0].client.responder = lambda call: "instruction: Explain amber basil cobalt dune to a child.\n|EoS|"
    synthesis = Synthesis(cfg, SEEDS, writers, answerers[1:], seed=0)  # no writer output, one answerer failing
    outcome = asyncio.run(synthesis.run())
    assert outcome.kept == [] and [d["reason"] for d in outcome.drops] == ["too_few_answers"]
    assert outcome.drops[0]["transient"] is True


def test_a_failed_writer_call_is_a_named_transient_drop():
    cfg = InstructionsConfig(n=1, max_rounds=2)
    writers, answerers = fake_agents()
    writers[0].client.responder = lambda call: CallError("server_error", "boom")
    outcome = asyncio.run(Synthesis(cfg, SEEDS, writers, answerers, seed=0).run())
    assert [(d["reason"], d["prompt_id"], d["transient"]) for d in outcome.drops] == [
        ("writer_failed", "batch0-round0-writer0", True), ("writer_failed", "batch0-round1-writer0", True)
    ]  # fmt: skip


def test_another_seed_writes_from_other_examples():
    cfg = InstructionsConfig(n=1, examples=1, per_call=4, max_rounds=1, input_share=0.5)
    shown = set()
    for seed in range(6):
        writers, answerers = fake_agents()
        asyncio.run(Synthesis(cfg.model_copy(update={"seed": seed}), SEEDS, writers, answerers, seed=seed).run())
        shown.add(writers[0].client.calls[0].last_user)
    assert len(shown) == 2  # both kinds of task were asked for


def test_planned_calls():
    cfg = InstructionsConfig(n=10, per_call=4)
    assert planned_calls(cfg, writers=2, answerers=3) == {
        "rounds": 2,
        "writer_calls": 4,
        "tasks": 16,
        "answer_calls": 48,
    }


def test_a_checkable_task_is_kept_only_when_the_consensus_reaches_the_writers_answer():
    """With-answer tasks: the writer's answer becomes the reference only if the answerers' consensus
    passes moaa.verify's answer check against it (math-verify, in a check worker)."""
    from moaa.config import VerifyConfig
    from moaa.verify.checks import Verifier

    seeds = [*SEEDS, SeedTask("s-sum", "maths", "What is 2 + 2?", "", "2 + 2 = 4", "4")]
    tasks = {"What is 6 times 7 exactly?": ("42", "6 x 7 = 42"), "What is 5 times 5 exactly?": ("26", "5 x 5 = 26")}
    writer = FakeClient("w", model="writer-model")
    writer.responder = lambda call: "".join(
        f"instruction: {q}\noutput: {out}\nanswer: {a}\n|EoS|\n" for q, (a, out) in tasks.items()
    )
    right = {"What is 6 times 7 exactly?": "6 times 7 is 42.", "What is 5 times 5 exactly?": "5 times 5 is 25."}
    answerers = [FakeClient(f"a{i}", responder=lambda call: right[call.last_user]) for i in range(2)]
    cfg = InstructionsConfig(n=1, per_call=2, max_rounds=1, checkable_share=1.0, agreement={"threshold": 0.5})
    synthesis = Synthesis(
        cfg, seeds, [Agent("writer0", AgentConfig(endpoint="w"), writer)],
        [Agent(f"answerer{i}", AgentConfig(endpoint=f"a{i}"), c) for i, c in enumerate(answerers)],
        seed=0, verifier=Verifier(VerifyConfig()),
    )  # fmt: skip
    outcome = asyncio.run(synthesis.run())
    assert (
        "answer: 4" in writer.calls[0].last_user and writer.calls[0].tag == "instructions.writer.write-with-answer@v2"
    )
    assert [(r["instruction"], r["reference"], r["category"]) for r in outcome.kept] == [
        ("What is 6 times 7 exactly?", '{"answer": "42"}', "with-answer")
    ]
    assert [(d["reason"], "'26'" in d["error"]) for d in outcome.drops] == [("reference_disputed", True)]


def test_tasks_past_n_in_the_last_round_are_named_not_kept():
    outcome, _ = run_batch(InstructionsConfig(n=1, per_call=4, input_share=0))
    assert len(outcome.kept) == 1 and outcome.rounds == 1
    assert [d["reason"] for d in outcome.drops if d["reason"] == "beyond_n"] == ["beyond_n"]


def test_diversity_counts_distinct_ngrams_and_embedding_distance():
    import numpy as np

    from moaa.instructions.diversity import distinct_n, diversity, embedding_distance

    assert distinct_n(["a b a b", "a b"], 1) == 0.3333 and distinct_n(["a b c", "a b d"], 2) == 0.75
    assert diversity([]) == {"count": 0, "distinct_1": 0.0, "distinct_2": 0.0}
    vectors = {"x": [1.0, 0.0], "y": [0.0, 1.0], "z": [1.0, 0.0]}
    assert embedding_distance(["x", "y", "z"], lambda t: np.array([vectors[s] for s in t])) == round(1 - 1 / 3, 4)
    assert embedding_distance(["x"]) is None


def test_a_writer_whose_endpoint_takes_a_schema_answers_as_json():
    """The embedded model, asked for `|EoS|` blocks, echoed the markers; a schema makes its reply parse."""
    from types import SimpleNamespace

    writer = FakeClient("w", model="writer-model")
    writer.endpoint = SimpleNamespace(json_schema=True, json_schema_style="llama.cpp")
    reply = {"tasks": [{"instruction": "Explain c1 c2 c3 c4 c5 c6 to a child.", "input": "", "output": "ok"}]}
    writer.responder = lambda call: json.dumps(reply)
    answerers = [FakeClient(f"a{i}", responder=lambda call: "ok") for i in range(2)]
    cfg = InstructionsConfig(n=1, per_call=3, max_rounds=1, input_share=0)
    synthesis = Synthesis(
        cfg, SEEDS, [Agent("writer0", AgentConfig(endpoint="w"), writer)],
        [Agent(f"answerer{i}", AgentConfig(endpoint=f"a{i}"), c) for i, c in enumerate(answerers)], seed=0,
    )  # fmt: skip
    outcome = asyncio.run(synthesis.run())
    call = writer.calls[0]
    assert call.response_format["type"] == "json_object"
    assert call.response_format["schema"]["properties"]["tasks"]["maxItems"] == 3
    asked = '{"tasks": [{"instruction": "...", "input": "...", "output": "..."}, ...]}, one object per new task.'
    assert call.last_user.endswith(asked)
    assert call.tag == "instructions.writer.write-no-input@v2+write-as-json@v1"
    assert [r["instruction"] for r in outcome.kept] == ["Explain c1 c2 c3 c4 c5 c6 to a child."]


@pytest.mark.slow
def test_consensus_by_minilm_embeddings_tells_paraphrases_from_an_unrelated_answer():
    """`agreement.measure: embedding` with the offline MiniLM model moaa ships (moaa.local.embeddings)."""
    close = ["Paris is the capital of France.", "The capital city of France is Paris.", "France's capital: Paris."]
    agreed = find_consensus(close, "embedding")
    mixed = find_consensus([*close[:2], "Photosynthesis turns light into chemical energy."], "embedding")
    assert not agreed.exact and agreed.agreement > 0.7
    assert mixed.agreement < 0.3 and mixed.index in (0, 1)


def test_a_task_may_get_a_verifiable_ifeval_constraint_answered_and_checked_with_it():
    """constraint_share: a kept task's prompt ends with IFEval's own sentence for one constraint, its reference
    is that constraint (checked by moaa.verify), the answerers saw it, and the writer's unconstrained output is
    no answer to agree with; the draw is a function of the task, so a re-run draws the same."""
    from moaa.config import VerifyConfig
    from moaa.instructions.verifiable import CATALOG, description
    from moaa.rows import Prompt, Reference
    from moaa.verify.checks import Verifier

    cfg = InstructionsConfig(n=4, per_call=4, constraint_share=1.0, agreement={"threshold": 0.5})
    outcome, _ = run_batch(cfg)
    again, _ = run_batch(cfg)
    assert [r["prompt"] for r in again.kept] == [r["prompt"] for r in outcome.kept]
    assert len(outcome.kept) == 4
    ids = {cid for cid, _ in CATALOG}
    verifier = Verifier(VerifyConfig())
    for row in outcome.kept:
        reference = json.loads(row["reference"])
        (cid,), (kwargs,) = reference["instructions"], reference["kwargs"]
        assert cid in ids and row["prompt"].split("\n")[0].endswith(description(cid, kwargs))
        assert row["instruction"] in row["prompt"] and description(cid, kwargs) not in row["instruction"]
        assert "writer0 (writer)" not in row["answerers"] and len(row["answerers"]) == 2
        prompt = Prompt(row["prompt_id"], [{"role": "user", "content": row["prompt"]}], "t", "c", Reference(
            instructions=tuple(reference["instructions"]), kwargs=tuple(reference["kwargs"])))  # fmt: skip
        assert asyncio.run(verifier.check(prompt, row["consensus_answer"])).checks == ("constraints",)
    assert len({json.loads(r["reference"])["instructions"][0] for r in outcome.kept}) > 1  # drawn, not fixed
    plain, _ = run_batch(InstructionsConfig(n=4, per_call=4, agreement={"threshold": 0.5}))
    assert all(r["reference"] is None for r in plain.kept)  # off by default


@pytest.mark.parametrize("code_share", [0.0, 0.75])
def test_with_tests_seeds_are_shown_only_to_with_tests_calls(code_share):
    """code_share picks the with-tests template and its seeds; at 0 (the default) the calls are those of before:
    the same kinds drawn, and no with-tests seed shown."""
    seeds = load_seeds(SHIPPED_SEEDS)
    plain = [s for s in seeds if not s.tests]
    asked = {}
    for chosen in (seeds, plain):
        writers, answerers = fake_agents()
        cfg = InstructionsConfig(n=1, per_call=4, max_rounds=4, code_share=code_share, checkable_share=0.25)
        asyncio.run(Synthesis(cfg, chosen, writers, answerers, seed=3).run())
        asked[len(chosen)] = [(c.tag, c.last_user) for c in writers[0].client.calls]
    with_tests = [(tag, text) for tag, text in asked[len(seeds)] if tag.endswith("write-with-tests@v1")]
    if code_share == 0:
        assert asked[len(seeds)] == asked[len(plain)] and not with_tests
    else:
        kinds = {tag.split(".")[2] for tag, _ in asked[len(seeds)]}
        assert with_tests and kinds == {"write-with-tests@v1", "write-with-answer@v2"}  # one draw splits the calls
    for tag, text in asked[len(seeds)]:
        shown = {s.id for s in seeds if f"instruction: {s.instruction}" in text}
        assert shown and all(bool(s.tests) == tag.endswith("write-with-tests@v1") for s in seeds if s.id in shown)


def test_checkable_and_code_shares_split_the_calls():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"checkable_share 0.5 \+ code_share 0.6 is over 1"):
        InstructionsConfig(n=1, checkable_share=0.5, code_share=0.6)
    assert InstructionsConfig(n=1).code_share == 0.0
