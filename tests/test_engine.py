"""Tests for moaa.engine over the deterministic fake client (pure logic, no HTTP)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fakes import FakeCall, all_calls, fake_clients

from moaa.config import GenerationConfig
from moaa.engine import answer_prompt, calls_per_prompt, derive_seed
from moaa.engine.self_moa import seq_windows
from moaa.models.client import CallError
from moaa.rows import Prompt

ENDPOINTS = ("a", "b", "c", "agg")


def make_gen(method: str = "moa", **overrides: Any) -> GenerationConfig:
    raw: dict[str, Any] = {
        "method": method,
        "proposers": [{"endpoint": "a"}, {"endpoint": "b"}, {"endpoint": "c"}],
        "aggregator": {"endpoint": "agg"},
    }
    if method == "moa":
        raw["layers"] = 2  # these tests use the MoA-Lite shape; moa's own default (3) is tested in test_config
    raw.update(overrides)
    return GenerationConfig.model_validate(raw)


def ask(text: str = "What is MoA?", system: str | None = None) -> Prompt:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return Prompt.from_messages(messages, source="test")


def answer(prompt: Prompt, gen: GenerationConfig, clients: dict, **kwargs: Any):
    return asyncio.run(answer_prompt(prompt, gen, clients, **kwargs))


def moderator_says(selected: list[int], stop: bool = False, reasoning: str = "r"):
    """Responder for the aggregator endpoint: moderator JSON for moderator calls, default text otherwise."""

    def respond(call: FakeCall):
        if ".moderator." in call.tag:
            return json.dumps({"reasoning": reasoning, "selected": selected, "stop": stop})
        return None

    return respond


def headers(call: FakeCall) -> list[str]:
    """The header line of each 'Response i' block of a call's system message."""
    body = call.system.split("Responses:\n\n", 1)[1]
    return [block.split("\n", 1)[0] for block in body.split("\n\n") if block.startswith("Response ")]


def references(call: FakeCall) -> list[str]:
    """The 'Response i:' blocks of a call's system message, in order."""
    system = call.system
    if "Responses:" not in system:
        return []
    body = system.split("Responses:\n\n", 1)[1]
    return [block.split(":\n", 1)[1] for block in body.split("\n\n") if block.startswith("Response ")]


VARIANTS = [
    ("single", {}, {"a": 1}),
    ("moa", {"layers": 2}, {"a": 1, "b": 1, "c": 1, "agg": 1}),
    ("moa", {"layers": 3}, {"a": 2, "b": 2, "c": 2, "agg": 1}),
    ("moa-lite", {}, {"a": 1, "b": 1, "c": 1, "agg": 1}),
    ("self-moa", {"self_moa": {"samples": 4}}, {"a": 1, "agg": 1}),
    ("self-moa-seq", {"seq": {"samples": 12, "window": 6, "new_per_step": 3, "repeats": 2}}, {"a": 1, "agg": 3}),
    ("self-moa-seq", {"seq": {"samples": 4, "window": 6}}, {"a": 1, "agg": 1}),
    ("smoa", {"smoa": {"rounds": 2, "k": 2, "roles": ["r0", "r1", "r2"]}}, {"a": 2, "b": 2, "c": 2, "agg": 3}),
    ("smoa", {"smoa": {"rounds": 3, "k": 1, "roles": ["r0"]}}, {"a": 3, "b": 3, "c": 3, "agg": 4}),
]


@pytest.mark.parametrize("method, overrides, expected", VARIANTS)
def test_calls_per_variant_match_engine_and_estimate(method, overrides, expected):
    gen = make_gen(method, **overrides)
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = moderator_says([0, 1])
    result = answer(ask(), gen, clients)
    assert result.failure is None
    assert {name: len(c.calls) for name, c in clients.items() if c.calls} == expected
    estimate = calls_per_prompt(gen)
    assert estimate["calls"] == result.calls == sum(expected.values())
    assert estimate["endpoints"] == expected
    assert result.row.method == method
    assert result.row.messages == [*ask().messages, {"role": "assistant", "content": result.trace[-1].text}]
    assert result.completion_tokens == sum(s.completion_tokens for s in result.trace)


def test_moa_layers_feed_forward_and_aggregator_sees_survivors_only():
    gen = make_gen("moa", layers=3)
    clients = fake_clients(*ENDPOINTS)
    clients["b"].responder = lambda call: (
        CallError("server_error", "b is down") if "Responses:" in call.system else None
    )
    result = answer(ask(system="Be kind."), gen, clients)
    assert result.failure is None
    layer1 = {name: clients[name].calls[0] for name in "abc"}
    layer1_texts = [s.text for s in result.trace if s.layer == 1]
    for call in layer1.values():
        assert call.messages == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "What is MoA?"}]
        assert call.tag == "sft.proposer.propose@v1"
    for name in "abc":  # layer 2 sees all three layer-1 answers, numbered from 1
        call = clients[name].calls[1]
        assert call.tag == "sft.proposer.aggregate@v1"
        assert call.system.startswith("Be kind.\n\nOther assistants")
        assert references(call) == layer1_texts
        assert "Response 1:" in call.system and "Response 0:" not in call.system
    layer2 = [s for s in result.trace if s.layer == 2]
    survivors = [s.text for s in layer2 if s.selected]
    assert len(survivors) == 2 and [s.agent for s in layer2 if not s.selected] == ["proposer1"]
    agg = clients["agg"].calls[0]
    assert agg.tag == "sft.aggregator.aggregate@v1"
    assert references(agg) == survivors
    assert agg.messages[1:] == [{"role": "user", "content": "What is MoA?"}]
    assert result.counters == {"failed_calls": 1}
    assert result.row.messages[-1]["content"] == result.trace[-1].text
    assert result.trace[-1].kind == "aggregate" and result.trace[-1].layer == 3
    assert result.row.models == ["a-model", "b-model", "c-model", "agg-model"]


def test_empty_answers_are_dropped_and_counted():
    gen = make_gen("moa")
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: "   "
    result = answer(ask(), gen, clients)
    assert result.failure is None
    assert len(references(clients["agg"].calls[0])) == 2
    assert result.counters == {"empty_answers": 1}


@pytest.mark.parametrize("method", ["moa", "smoa", "self-moa", "single"])
def test_unanswerable_prompt_becomes_failure_with_reason(method):
    gen = make_gen(method, min_answers=2, smoa={"roles": ["x"]})
    clients = fake_clients(*ENDPOINTS)
    down = CallError("server_error", "HTTP 500 boom")
    for name in "ab":
        clients[name].responder = lambda call: down
    result = answer(ask(), gen, clients)
    assert result.row is None
    assert (result.failure.reason, result.failure.error, result.failure.stage) == (
        "proposers_failed",
        "server_error: HTTP 500 boom",
        "sft",
    )
    assert clients["agg"].calls == []
    assert [s.finish_reason for s in result.trace if not s.selected][:1] == ["error"]


def test_a_failing_proposer_does_not_fail_the_prompt_while_enough_remain():
    gen = make_gen("moa", min_answers=2)
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: CallError("timeout", "slow")
    result = answer(ask(), gen, clients)
    assert result.failure is None and len(references(clients["agg"].calls[0])) == 2


def test_aggregator_failure():
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = lambda call: CallError("bad_request", "HTTP 400 too long")
    result = answer(ask(), make_gen("moa"), clients)
    assert result.failure.reason == "aggregator_failed"
    assert result.failure.error == "bad_request: HTTP 400 too long"
    assert result.calls == 4 and result.counters == {"failed_calls": 1}


def test_roles_go_first_in_the_system_message():
    gen = make_gen("moa", proposers=[{"endpoint": "a", "role": "You are a chemist."}, {"endpoint": "b"}])
    clients = fake_clients(*ENDPOINTS)
    answer(ask(system="Answer in English."), gen, clients)
    assert clients["a"].calls[0].system == "You are a chemist.\n\nAnswer in English."
    assert clients["b"].calls[0].system == "Answer in English."
    answer(ask(), gen, clients)
    assert clients["a"].calls[1].messages[0] == {"role": "system", "content": "You are a chemist."}
    assert clients["b"].calls[1].messages[0]["role"] == "user"


def test_seeds_are_explicit_deterministic_and_distinct():
    gen = make_gen("moa", layers=3)
    first, second = fake_clients(*ENDPOINTS), fake_clients(*ENDPOINTS)
    prompt = ask()
    a = answer(prompt, gen, first)
    b = answer(prompt, gen, second)
    seeds = [c.seed for c in all_calls(first)]
    assert seeds == [c.seed for c in all_calls(second)] and a.row == b.row
    assert len(set(seeds)) == len(seeds) == 7
    assert first["a"].calls[0].seed == derive_seed(prompt.prompt_id, 0, 1, "proposer0", 0)
    other = fake_clients(*ENDPOINTS)
    answer(ask("another question"), gen, other)
    assert other["a"].calls[0].seed != first["a"].calls[0].seed
    pinned = make_gen("moa", proposers=[{"endpoint": "a", "seed": 42, "temperature": 0.3}])
    clients = fake_clients(*ENDPOINTS)
    answer(prompt, pinned, clients)
    assert clients["a"].calls[0].seed == 42 and clients["a"].calls[0].sampling.temperature == 0.3


def test_self_moa_samples_in_one_call_and_aggregates_them():
    gen = make_gen("self-moa", self_moa={"samples": 5}, proposers=[{"endpoint": "a", "temperature": 0.7}])
    clients = fake_clients(*ENDPOINTS)
    result = answer(ask(), gen, clients)
    (call,) = clients["a"].calls
    assert call.n == 5 and call.sampling.temperature == 0.7
    samples = [s for s in result.trace if s.kind == "sample"]
    assert [s.index for s in samples] == [0, 1, 2, 3, 4] and len({s.text for s in samples}) == 5
    assert references(clients["agg"].calls[0]) == [s.text for s in samples]
    assert result.row.models == ["a-model", "agg-model"]


@pytest.mark.parametrize(
    "samples, window, new, repeats", [(12, 6, 3, 1), (12, 6, 3, 3), (10, 4, 2, 2), (7, 3, 1, 2), (3, 6, 3, 1)]
)
def test_self_moa_seq_never_exceeds_window(samples, window, new, repeats):
    seq = {"samples": samples, "window": window, "new_per_step": new, "repeats": repeats}
    gen = make_gen("self-moa-seq", seq=seq)
    clients = fake_clients(*ENDPOINTS)
    result = answer(ask(), gen, clients)
    sample_texts = [s.text for s in result.trace if s.kind == "sample"]
    steps = clients["agg"].calls
    assert (
        len(steps) == len(seq_windows(samples, window, new)) == calls_per_prompt(gen)["agents"]["aggregator"]["calls"]
    )
    assert references(steps[0]) == sample_texts[:window]
    assert headers(steps[0]) == [f"Response {i}:" for i in range(1, min(samples, window) + 1)]
    seen = min(samples, window)
    for i, call in enumerate(steps[1:]):
        refs = references(call)
        assert len(refs) <= window
        previous = [s.text for s in result.trace if s.layer == i + 2 and s.kind == "synthesis"]
        assert refs[:repeats] == previous * repeats
        assert refs[repeats:] == sample_texts[seen : seen + new]
        # the running synthesis is labelled, so the aggregator can tell it even when it appears once
        labelled = [f"Response {j} (synthesis of earlier answers):" for j in range(1, repeats + 1)]
        assert headers(call) == labelled + [f"Response {j}:" for j in range(repeats + 1, len(refs) + 1)]
        assert '"(synthesis of earlier answers)"' in call.system
        seen += new
        assert call.tag == "sft.aggregator.seq-aggregate@v2"
    assert seen >= samples
    assert result.row.messages[-1]["content"] == result.trace[-1].text
    assert [s.kind for s in result.trace if s.kind in ("synthesis", "aggregate")][-1] == "aggregate"


def test_smoa_forwards_only_selected_and_respects_stop():
    gen = make_gen("smoa", smoa={"rounds": 3, "k": 2, "roles": ["R0", "R1", "R2"]})
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = moderator_says([2, 0], reasoning="two agree")
    result = answer(ask(), gen, clients)
    round1 = [s for s in result.trace if s.layer == 1 and s.kind == "proposal"]
    assert [s.selected for s in round1] == [True, False, True]
    for i, name in enumerate("abc"):
        assert clients[name].calls[0].system == f"R{i}"
        second = clients[name].calls[1]
        assert second.system.startswith(f"R{i}\n\nOther assistants")
        assert references(second) == [round1[2].text, round1[0].text]
    moderation = [s for s in result.trace if s.kind == "moderator"]
    assert len(moderation) == 3
    assert json.loads(moderation[0].meta) == {"reasoning": "two agree", "selected": [2, 0], "stop": False}
    moderator_call = next(c for c in clients["agg"].calls if ".moderator." in c.tag)
    assert "Response 0:" in moderator_call.last_user and "Response 3:" not in moderator_call.last_user
    round3 = [s for s in result.trace if s.layer == 3 and s.kind == "proposal"]
    final = clients["agg"].calls[-1]
    assert final.tag == "sft.aggregator.aggregate@v1"
    assert references(final) == [round3[2].text, round3[0].text]
    assert result.trace[-1].layer == 4


@pytest.mark.parametrize("early_stop, expected_rounds", [(True, 1), (False, 3)])
def test_smoa_early_stop(early_stop, expected_rounds):
    gen = make_gen("smoa", smoa={"rounds": 3, "k": 1, "roles": ["R"], "early_stop": early_stop})
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = moderator_says([1], stop=True)
    result = answer(ask(), gen, clients)
    assert len(clients["a"].calls) == expected_rounds
    assert len(clients["agg"].calls) == expected_rounds + 1
    chosen = [s for s in result.trace if s.layer == expected_rounds and s.kind == "proposal"][1]
    assert references(clients["agg"].calls[-1]) == [chosen.text]


def test_smoa_unparsable_moderator_picks_k_at_random_seeded():
    gen = make_gen("smoa", smoa={"rounds": 1, "k": 2, "roles": ["R"]})
    runs = []
    for _ in range(2):
        clients = fake_clients(*ENDPOINTS)
        clients["agg"].responder = lambda call: "I like the second one best." if ".moderator." in call.tag else None
        runs.append((answer(ask(), gen, clients), clients))
    (result, clients), (again, _) = runs
    assert result.counters == {"moderator_parse_failures": 1}
    meta = json.loads(next(s for s in result.trace if s.kind == "moderator").meta)
    assert meta["fallback"] == "random" and len(meta["selected"]) == 2 and meta["stop"] is False
    assert len(references(clients["agg"].calls[-1])) == 2
    assert [s.selected for s in result.trace] == [s.selected for s in again.trace]


@pytest.mark.parametrize(
    "reply, counter, problem",
    [
        ('{"reasoning": "r", "selected": [0, 5], "stop": true}', "moderator_invalid_choices", "invalid choice [5]"),
        ("Response 1 is best.", "moderator_parse_failures", "unparsable"),
    ],
)
def test_smoa_falls_back_to_random_k_on_an_invalid_choice_and_records_it(reply, counter, problem):
    gen = make_gen("smoa", smoa={"rounds": 1, "k": 2, "roles": ["R"]})
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = lambda call: reply if ".moderator." in call.tag else None
    result = answer(ask(), gen, clients)
    assert result.counters == {counter: 1}
    meta = json.loads(next(s for s in result.trace if s.kind == "moderator").meta)
    assert meta["fallback"] == "random" and meta["problem"].startswith(problem) and meta["stop"] is False
    assert len(meta["selected"]) == 2 and len(references(clients["agg"].calls[-1])) == 2


def test_smoa_roles_from_caller_when_config_has_none():
    gen = make_gen("smoa", smoa={"rounds": 1})
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = moderator_says([0])
    answer(ask(), gen, clients, roles=["X", "Y", "Z"])
    assert [clients[n].calls[0].system for n in "abc"] == ["X", "Y", "Z"]


def test_multi_turn_answers_every_user_turn():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "old a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "old a2"},
        {"role": "user", "content": "u3"},
    ]
    clients = fake_clients(*ENDPOINTS)
    result = answer(Prompt.from_messages(messages), make_gen("moa"), clients)
    finals = [s.text for s in result.trace if s.kind == "aggregate"]
    assert [s.turn for s in result.trace if s.kind == "aggregate"] == [0, 1, 2]
    assert result.row.messages == [
        messages[0],
        messages[1],
        {"role": "assistant", "content": finals[0]},
        messages[3],
        {"role": "assistant", "content": finals[1]},
        messages[5],
        {"role": "assistant", "content": finals[2]},
    ]
    third = clients["a"].calls[2]
    assert third.messages == result.row.messages[:-1]  # the mixture's answers, not the originals
    assert "old a1" not in json.dumps([c.messages for c in all_calls(clients)])
    assert result.calls == 12


def test_trailing_assistant_turn_is_replaced_and_no_user_turn_fails():
    messages = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "old"}]
    result = answer(Prompt.from_messages(messages), make_gen("single"), fake_clients("a"))
    assert [m["role"] for m in result.row.messages] == ["user", "assistant"]
    assert result.row.messages[1]["content"] != "old"
    lonely = answer(Prompt.from_messages([{"role": "system", "content": "S"}]), make_gen("single"), fake_clients("a"))
    assert lonely.failure.reason == "no_user_turn" and lonely.calls == 0


def test_shuffle_references_is_seeded():
    gen = make_gen("moa", shuffle_references=True, proposers=[{"endpoint": e} for e in ("a", "b", "c", "a", "b")])
    orders = []
    for _ in range(2):
        clients = fake_clients(*ENDPOINTS)
        result = answer(ask(), gen, clients)
        layer1 = [s.text for s in result.trace if s.layer == 1]
        refs = references(clients["agg"].calls[0])
        assert sorted(refs) == sorted(layer1)
        orders.append(refs)
    assert orders[0] == orders[1] and orders[0] != layer1


def test_cluster_filter_keeps_larger_cluster():
    gen = make_gen("moa", cluster_filter=True, proposers=[{"endpoint": e} for e in ("a", "b", "c", "b")])
    clients = fake_clients(*ENDPOINTS)
    clients["c"].responder = lambda call: "DECEPTIVE"

    def embed(texts):
        return [[0.0, 1.0] if t == "DECEPTIVE" else [1.0, 0.0] for t in texts]

    result = answer(ask(), gen, clients, embed=embed)
    refs = references(clients["agg"].calls[0])
    assert len(refs) == 3 and "DECEPTIVE" not in refs
    assert result.counters == {"filtered_answers": 1}
    assert [s.selected for s in result.trace if s.kind == "proposal"] == [True, True, False, True]


def test_cluster_filter_keeps_all_on_a_tie():
    gen = make_gen("moa", cluster_filter=True, proposers=[{"endpoint": e} for e in ("a", "b", "c", "b")])
    clients = fake_clients(*ENDPOINTS)
    flip = iter(range(100))
    result = answer(
        ask(), gen, clients, embed=lambda texts: [[1.0, 0.0] if next(flip) % 2 else [0.0, 1.0] for _ in texts]
    )
    assert len(references(clients["agg"].calls[0])) == 4 and result.counters == {}


@pytest.mark.parametrize("method, overrides, expected", VARIANTS)
def test_every_variant_answers_every_user_turn(method, overrides, expected):
    messages = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "old"},
        {"role": "user", "content": "u2"},
    ]
    clients = fake_clients(*ENDPOINTS)
    clients["agg"].responder = moderator_says([0])
    result = answer(Prompt.from_messages(messages), make_gen(method, **overrides), clients)
    assert [m["role"] for m in result.row.messages] == ["user", "assistant", "user", "assistant"]
    assert result.row.messages[1]["content"] != "old" and result.row.messages[2] == messages[2]
    assert {s.turn for s in result.trace} == {0, 1}
    assert {name: len(c.calls) for name, c in clients.items() if c.calls} == {k: 2 * v for k, v in expected.items()}
    assert calls_per_prompt(make_gen(method, **overrides), turns=2)["calls"] == result.calls


def test_trace_and_models_follow_call_order_not_completion_order():
    """Proposers finishing in reverse order must not reorder the trace, the models or the references."""
    clients = fake_clients(*ENDPOINTS)
    for delay, name in zip((0.06, 0.03, 0.0), "abc", strict=True):
        clients[name].delay_s = delay
    result = answer(ask(), make_gen(), clients)
    proposals = [s for s in result.trace if s.kind == "proposal"]
    assert [s.model for s in proposals] == ["a-model", "b-model", "c-model"]
    assert result.row.models == ["a-model", "b-model", "c-model", "agg-model"]
    assert references(clients["agg"].calls[0]) == [s.text for s in proposals]
