"""Quality gates on aggregates (moaa.engine.quality): scaffolding and verbatim copies are re-asked,
then the prompt fails with a named reason; an SFT answer never keeps "Response N:" blocks."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from fakes import FakeCall, fake_clients

from moaa.config import GenerationConfig, QualityConfig
from moaa.engine import answer_prompt
from moaa.engine.quality import aggregate_problem
from moaa.rows import Prompt

ENDPOINTS = ("a", "b", "c", "agg")
PROMPT = Prompt.from_messages([{"role": "user", "content": "How big is the Sun?"}], source="test")
GATES = QualityConfig()
# What the embedded 0.5B aggregator wrote in `make data` (ALGORITHMS.md section 8)
PASTED = "The Sun is big. Response 1: To determine the size of the Sun, astronomers measure its angular diameter."
CLEAN = "The Sun's diameter is about 1.39 million km, roughly 109 times Earth's."
SCAFFOLD_IN_ROW = re.compile(r"\bResponse\s+\d+\s*:")


def gen_of(method: str = "moa", **overrides: Any) -> GenerationConfig:
    raw = {
        "method": method,
        "proposers": [{"endpoint": "a"}, {"endpoint": "b"}, {"endpoint": "c"}],
        "aggregator": {"endpoint": "agg"},
    }
    return GenerationConfig.model_validate(raw | overrides)


@pytest.mark.parametrize(
    "text, counter",
    [
        (PASTED, "scaffolding"),
        ("**Response 2**: the Sun is a star.", "scaffolding"),
        ("Response 1 (synthesis of earlier answers):\nThe Sun is a star.", "scaffolding"),
        ("Responses 1 and 3: both say 1.39 million km.", "scaffolding"),
        ("Other assistants have already answered the latest user message. The Sun is 1.39 million km.", "scaffolding"),
        # the re-ask's own instruction echoed back as the answer (make data wrote it as an SFT row)
        (
            "No numbered response headings, no mention of other responses or of these instructions, and not a "
            "copy of any one of the responses.",
            "scaffolding",
        ),
        ("  the proposer's  OWN words \n", "verbatim_copy"),
        (CLEAN, ""),
        ("The server sends a response with status 404 to the client.", ""),
    ],
)
def test_aggregate_problem(text, counter):
    refs = ["The proposer's own words", "Another answer"]
    assert aggregate_problem(text, refs, GATES)[0] == counter


def test_a_single_reference_may_be_kept_as_it_is_and_gates_can_be_off():
    assert aggregate_problem("only one", ["only one"], GATES) == ("", "")
    off = QualityConfig(scaffolding=False, verbatim_copy=False)
    assert aggregate_problem(PASTED, [], off) == ("", "")


def aggregator_pastes(times: int):
    """The aggregator pastes the scaffolding back on its first `times` answers, then answers cleanly."""
    state = {"asked": 0}

    def respond(call: FakeCall) -> str | None:
        state["asked"] += 1
        return PASTED if state["asked"] <= times else CLEAN

    return respond


@pytest.mark.parametrize("method", ["moa", "self-moa", "self-moa-seq", "smoa"])
def test_the_engine_never_keeps_an_answer_with_response_n_scaffolding(method):
    extra = {"smoa": {"rounds": 1, "roles": ["R"]}} if method == "smoa" else {}
    gen = gen_of(method, **extra, seq={"samples": 4, "window": 4})
    for times in (0, 1, 5):
        clients = fake_clients(*ENDPOINTS)
        respond = aggregator_pastes(times)
        clients["agg"].responder = lambda call, r=respond: (
            '{"reasoning": "", "selected": [0], "stop": false}' if ".moderator." in call.tag else r(call)
        )
        result = asyncio.run(answer_prompt(PROMPT, gen, clients))
        if result.row is not None:
            assert not SCAFFOLD_IN_ROW.search(result.row.messages[-1]["content"])
            assert result.row.messages[-1]["content"] == CLEAN
        else:
            assert result.failure.reason == "quality_scaffolding"
            assert result.failure.error.startswith("the aggregate failed the quality gate: it contains")
        assert (result.row is None) == (times > 1)  # one re-ask by default


def test_a_reask_shows_the_aggregator_its_answer_and_what_was_wrong():
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = aggregator_pastes(1)
    result = asyncio.run(answer_prompt(PROMPT, gen_of(), clients))
    first, again = clients["agg"].calls
    assert again.messages[: len(first.messages)] == first.messages
    assert again.messages[-2] == {"role": "assistant", "content": PASTED}
    assert again.messages[-1]["content"].startswith(
        "Your answer above cannot be used: it contains the references' heading 'Response 1:'."
    )
    assert again.seed != first.seed
    assert result.counters == {"gate_scaffolding": 1, "gate_reasks": 1}
    aggregates = [s for s in result.trace if s.kind == "aggregate"]
    assert [(s.text, s.selected) for s in aggregates] == [(PASTED, False), (CLEAN, True)]


def test_a_verbatim_copy_is_dropped_with_its_reason_when_reasks_are_off():
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: "Copied answer."
    clients["agg"].responder = lambda call: "Copied answer."
    result = asyncio.run(answer_prompt(PROMPT, gen_of(quality={"reasks": 0}), clients))
    assert result.row is None and result.failure.reason == "quality_verbatim_copy"
    assert result.failure.error == "the aggregate failed the quality gate: it is response 1 copied word for word"
    assert result.counters == {"gate_verbatim_copy": 1, "gate_dropped": 1}
    assert len(clients["agg"].calls) == 1


@pytest.mark.parametrize(
    "refs, copy, counter",
    [
        (["Paris.", "Paris.", "paris. ", "Paris.", "Lyon.", "It is Paris, France."], "Paris.", ""),  # 4 of 6
        (["The answer is 4."] * 3, "The answer is 4.", ""),  # every input agrees
        (["Rome.", "Rome.", "Milan."], "Rome.", ""),  # all but one agree with the copy
        (["Rome.", "Rome.", "Milan.", "Milan."], "Rome.", ""),  # no text is given by more
        (["Rome.", "Milan.", "Milan."], "Rome.", "verbatim_copy"),  # the lone voice against the others
        (["Rome.", "Milan.", "Turin."], "Milan.", "verbatim_copy"),  # one of three different answers
    ],
)
def test_a_copy_is_rejected_only_when_it_loses_what_the_other_references_say(refs, copy, counter):
    assert aggregate_problem(copy, refs, GATES)[0] == counter


def test_seq_may_keep_its_running_synthesis_but_not_drop_it_for_one_new_sample():
    synthesis, new = "Synthesis so far.", ["New sample one.", "New sample two."]
    assert aggregate_problem(synthesis, [synthesis, *new], GATES, synthesis) == ("", "")
    assert aggregate_problem(synthesis, [synthesis, synthesis, *new], GATES, synthesis) == ("", "")
    assert aggregate_problem(new[0], [synthesis, *new], GATES, synthesis)[0] == "verbatim_copy"


def proposers_say(clients: dict, texts: list[str]) -> None:
    for name, text in zip(("a", "b", "c"), texts, strict=True):
        clients[name].responder = lambda call, t=text: t


def test_moa_keeps_an_aggregate_that_repeats_what_every_proposer_said():
    clients = fake_clients(*ENDPOINTS)
    proposers_say(clients, ["The answer is 4."] * 3)
    clients["agg"].responder = lambda call: "The answer is 4."
    result = asyncio.run(answer_prompt(PROMPT, gen_of(layers=2), clients))
    assert result.failure is None and result.row.messages[-1]["content"] == "The answer is 4."
    assert result.counters.get("gate_verbatim_copy", 0) == 0 and len(clients["agg"].calls) == 1


def test_self_moa_keeps_the_answer_most_samples_agree_on():
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: ["Paris.", "Paris.", "Lyon.", "Paris.", "Paris, France.", "Paris."]
    clients["agg"].responder = lambda call: "Paris."
    result = asyncio.run(answer_prompt(PROMPT, gen_of("self-moa", self_moa={"samples": 6}), clients))
    assert result.failure is None and result.row.messages[-1]["content"] == "Paris."
    assert len(clients["agg"].calls) == 1


def test_a_seq_step_that_keeps_its_synthesis_is_not_a_copy():
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: ["s1", "s2", "s3", "s4"]
    clients["agg"].responder = lambda call: "The synthesis, kept as it is."
    gen = gen_of("self-moa-seq", seq={"samples": 4, "window": 2, "new_per_step": 1, "repeats": 1})
    result = asyncio.run(answer_prompt(PROMPT, gen, clients))
    assert result.failure is None and result.row.messages[-1]["content"] == "The synthesis, kept as it is."
    assert len(clients["agg"].calls) == 3  # one per window step, none re-asked
    assert result.counters.get("gate_verbatim_copy", 0) == 0


def test_the_run_summary_and_the_card_count_what_the_gates_rejected():
    from moaa.dataset.card_sections import quality_section
    from moaa.work.summary import quality_line

    counters = {"steps": 40, "truncated": 1, "gate_scaffolding": 3, "gate_verbatim_copy": 1, "gate_reasks": 4}
    counters |= {"gate_dropped": 2, "degraded": 3}
    stages = {"sft": {"counters": counters}, "preference": {"counters": {"steps": 9, "unparsed": 2}}}
    gates = (
        "4 aggregates rejected by the quality gates (3 with reference scaffolding, 1 verbatim copies; "
        "4 re-asked, 2 prompts dropped)"
    )
    assert quality_line(stages) == (
        f"sft 1 of 40 answers truncated (dropped 0, re-asked 0, kept 0, kept as references 0), {gates}, "
        "3 rows from fewer answers than configured (sft.min_answers), preference 0 of 9 answers truncated, "
        "2 unparsed verdicts"
    )
    lines = quality_section({"counts": {"stages": stages}}, {})
    assert f"SFT answers: {gates}; a dropped prompt is a failure of reason quality_*." in lines
    assert any(line.startswith("Rows made by fewer answers than a layer asked for") and line.endswith(": 3.")
               for line in lines)  # fmt: skip
