"""A batch of the instruction stage (moaa.instructions.synthesis.Synthesis): its rounds, drops, consensus
and constraints with deterministic fake clients (the pure helpers: test_instructions; the pipeline over
HTTP: test_instructions_pipeline)."""

from __future__ import annotations

import asyncio
import json

import pytest

from moaa.config import AgentConfig, InstructionsConfig
from moaa.instructions.batches import SHIPPED_SEEDS
from moaa.instructions.seeds import SeedTask, load_seeds
from moaa.instructions.synthesis import Agent, Synthesis, planned_calls
from moaa.models.client import CallError
from moaa.prompts.instructions import WRITE_WITH_INPUT
from tests.fakes import FakeClient

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
