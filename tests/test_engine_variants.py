"""Tests for moaa.engine's sampling variants over the fake client: Self-MoA (one model's samples
aggregated), Self-MoA-Seq (a sliding window with the running synthesis) and SMoA (a moderator
forwards the selected answers, early stop, the random-k fallback)."""

from __future__ import annotations

import json

import pytest
from fakes import fake_clients

from moaa.engine import calls_per_prompt
from moaa.engine.self_moa import seq_windows
from tests.engine_helpers import ENDPOINTS, answer, ask, headers, make_gen, moderator_says, references


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
