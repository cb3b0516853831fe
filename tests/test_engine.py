"""Tests for moaa.engine over the deterministic fake client (pure logic, no HTTP): call counts per
variant, MoA layers, failures, roles and seeds, multi-turn prompts, reference order and clustering.
Self-MoA, Self-MoA-Seq and SMoA: test_engine_variants.py."""

from __future__ import annotations

import json

import pytest
from fakes import all_calls, fake_clients

from moaa.engine import calls_per_prompt
from moaa.models.agent_calls import derive_seed
from moaa.models.client import CallError
from moaa.rows import Prompt
from tests.engine_helpers import ENDPOINTS, answer, ask, make_gen, moderator_says, references

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
    gen = make_gen("moa", layers=3, min_answers=2)
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
    assert result.counters == {"failed_calls": 1, "degraded": 1, "degraded_layers": 1}
    assert json.loads(result.trace[-1].meta) == {"degraded": ["layer 2: 2 of 3 proposers answered"]}
    assert result.row.messages[-1]["content"] == result.trace[-1].text
    assert result.trace[-1].kind == "aggregate" and result.trace[-1].layer == 3
    assert result.row.models == ["a-model", "b-model", "c-model", "agg-model"]


def test_empty_answers_are_dropped_and_counted():
    gen = make_gen("moa", min_answers=2)
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: "   "
    result = answer(ask(), gen, clients)
    assert result.failure is None
    assert len(references(clients["agg"].calls[0])) == 2
    assert result.counters == {"empty_answers": 1, "degraded": 1, "degraded_layers": 1}


@pytest.mark.parametrize("method, width", [("moa", 3), ("smoa", 3), ("self-moa", 4)])
def test_a_mixture_missing_one_answer_fails_by_default(method, width):
    """min_answers unset: every proposer (every sample) must answer; a narrower mixture is a named,
    transient failure, never a row quietly made by fewer models."""
    gen = make_gen(method, smoa={"roles": ["x"]}, self_moa={"samples": width})
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: CallError("connection", "endpoint 'a' (a-model): connection failed")
    if method == "self-moa":  # one of its samples comes back empty
        clients["a"].responder = lambda call: ["x", "", "y", "z"]
    result = answer(ask(), gen, clients)
    assert result.row is None and result.failure.reason == "proposers_failed" and result.failure.transient
    assert clients["agg"].calls == []
    if method == "self-moa":
        assert result.failure.error.startswith("empty answer from proposer0")
    else:
        assert result.failure.error == "connection: endpoint 'a' (a-model): connection failed"


def test_a_degraded_row_says_how_many_answered():
    gen = make_gen("moa", layers=3, min_answers=1)
    clients = fake_clients(*ENDPOINTS)
    clients["a"].responder = lambda call: CallError("timeout", "slow")
    clients["b"].responder = lambda call: CallError("timeout", "slow") if "Responses:" in call.system else None
    result = answer(ask(), gen, clients)
    assert result.failure is None and result.counters["degraded"] == 1 and result.counters["degraded_layers"] == 2
    final = result.trace[-1]
    assert final.kind == "aggregate"
    layers = ["layer 1: 2 of 3 proposers answered", "layer 2: 1 of 3 proposers answered"]
    assert json.loads(final.meta)["degraded"] == layers
    assert all("degraded" not in (s.meta or "") for s in result.trace[:-1])


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
