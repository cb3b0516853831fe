"""What the row pages work out from a version's rows (pure logic, trace rows written by hand in the
engine's and the preference stage's shape): word diffs, what an aggregate took from each input, the
quality gate that rejected an aggregate, costs from the config's prices, both orders of a pairwise
verdict with their rationales, and why a pair was kept.

Run: .venv/bin/python -m pytest tests/test_view_details.py -x -q
"""

from __future__ import annotations

import json

import pytest

from moaa.view.mixture import build_mixture
from moaa.view.pair_detail import build_pair
from moaa.view.textdiff import borrowed, share_of, word_diff


def test_word_diff_marks_what_only_one_side_has_and_keeps_every_character():
    old, new = "The angle is 9 degrees,  so  done.", "The angle is 80 degrees, so done."
    left, right = word_diff(old, new)
    assert "".join(t for t, _ in left) == old and "".join(t for t, _ in right) == new
    assert [t for t, tag in left if tag == "del"] == ["9 "]  # words compared without their spacing
    assert [t for t, tag in right if tag == "ins"] == ["80 "]


def test_borrowed_tags_runs_found_in_one_input_several_or_none():
    inputs = ["Alpha beta gamma delta epsilon.", "zeta eta theta iota kappa", "alpha beta gamma delta"]
    text = "Alpha beta gamma delta! Then zeta eta theta iota, and lambda mu nu."
    spans = borrowed(text, inputs)
    assert "".join(t for t, _ in spans) == text
    assert spans[0] == ("Alpha beta gamma delta! ", "shared")  # in inputs 0 and 2 (case and punctuation aside)
    assert ("zeta eta theta iota, ", 1) in spans
    assert spans[-1] == ("and lambda mu nu.", None)
    shares = share_of(spans)
    assert shares[None] == pytest.approx(len("Then and lambda mu nu.") / len(text), abs=0.06)


def _step(kind, index, text, layer, **extra):
    return {"prompt_id": "p", "stage": "sft", "kind": kind, "text": text, "agent": extra.pop("agent", f"a{index}"),
            "model": "m", "role": "", "turn": 0, "layer": layer, "index": index, "selected": True,
            "prompt_tokens": 100, "completion_tokens": 50, "latency_s": 1.0 + index, "finish_reason": "stop",
            "cached": False, "score": None, "meta": ""} | extra  # fmt: skip


MANIFEST = {
    "config": {"endpoints": {"ep": {"model": "m", "price_input_per_mtok": 2.0, "price_output_per_mtok": 10.0}},
               "sft": {"proposers": [{"endpoint": "ep", "name": "a0"}], "quality": {"reasks": 1}},
               "preference": {"min_margin": 0.5, "max_length_ratio": 2.0}},
    "endpoints": {"ep": {"model": "m", "local": False}},
    "methods": {"sft": "moa", "scorer": "pairwise"},
}  # fmt: skip


def test_the_mixture_by_layer_with_gates_costs_and_what_the_aggregate_took():
    steps = [
        _step("proposal", 0, "Paris is the capital of France and its largest city.", 1),
        _step("proposal", 1, "The capital of France is Paris, on the Seine river.", 1),
        _step("proposal", 2, "Lyon.", 1, selected=False, finish_reason="length"),
        _step("aggregate", 0, "Response 1: Paris is the capital of France and its largest city.", 2,
              agent="agg", selected=False),
        _step("aggregate", 0, "Paris is the capital of France and its largest city, on the Seine river.", 2,
              agent="agg"),
    ]  # fmt: skip
    view = build_mixture(steps, MANIFEST)
    first, second = view.layers
    assert [s.status for s in first.answers] == ["selected", "selected", "cut at max_tokens"]
    rejected, kept = second.readers
    assert rejected.gate == "rejected by the quality gate: it contains the references' heading 'Response 1:'"
    assert kept.gate == "passed the quality gates"
    assert [s.row["index"] for s in second.inputs] == [0, 1]  # the kept answers of layer 1, not the cut one
    assert kept.segments == [("Paris is ", 0), ("the capital of France ", "shared"), ("and its largest city, ", 0),
                             ("on the Seine river.", 1)]  # fmt: skip
    assert first.answers[0].cost == pytest.approx((100 * 2.0 + 50 * 10.0) / 1e6)  # a0 -> endpoint ep's prices
    assert view.cost == pytest.approx(5 * (100 * 2.0 + 50 * 10.0) / 1e6)  # one endpoint serves model m
    assert view.tokens == {"prompt": 500, "completion": 250} and view.calls == 5
    assert view.latency == pytest.approx(3.0 + 1.0)  # the slowest proposal, then the slowest aggregate


def test_what_each_reader_was_shown_in_self_moa_seq_and_beside_a_moderator():
    steps = [
        _step("sample", 0, "one two three four five", 1), _step("sample", 1, "six seven eight nine ten", 1),
        _step("sample", 2, "dropped answer", 1, selected=False),
        _step("synthesis", 0, "one two three four five and six seven eight nine", 2, agent="agg"),
        _step("aggregate", 0, "one two three four five and six seven eight nine, final", 3, agent="agg"),
    ]  # fmt: skip
    layers = build_mixture(steps, MANIFEST).layers
    assert [[(s.row["kind"], s.row["index"]) for s in layer.inputs] for layer in layers] == [
        [("sample", 0), ("sample", 1)],  # layer 1: no reader; its own kept answers
        [("sample", 0), ("sample", 1)],  # the first synthesis: the samples
        [("synthesis", 0), ("sample", 0), ("sample", 1)],  # then the running synthesis and the samples
    ]
    moderated = build_mixture([_step("proposal", 0, "a b c d", 1), _step("proposal", 1, "e f g h", 1, selected=False),
                               _step("moderator", 0, '{"selected": [0]}', 1, agent="mod")], MANIFEST)  # fmt: skip
    assert [s.row["index"] for s in moderated.layers[0].inputs] == [0]


def _sample(index, text, score, pick=""):
    meta = {"count": 1, "samples": [index]} | ({"pick": pick} if pick else {})
    return {"prompt_id": "q", "stage": "preference", "kind": "sample", "text": text, "agent": "policy", "model": "m",
            "index": index, "selected": bool(pick), "score": score, "finish_reason": "stop", "prompt_tokens": 10,
            "completion_tokens": 5, "meta": json.dumps(meta)}  # fmt: skip


def _verdict(index, pairs):
    raw = lambda winner, why: [f'{{"rationale": "{why}", "winner": "{winner}"}}']  # noqa: E731
    details = {"pairs": [{"judge": "judge-model", "other": j, "ab": ab, "ba": ba, "outcome": outcome, "agree": agree,
                          "raw_ab": raw(ab, f"ab {index}-{j}"), "raw_ba": raw(ba, f"ba {index}-{j}")}
                         for j, ab, ba, outcome, agree in pairs], "wins": 0, "ties": 0, "losses": 0}  # fmt: skip
    return {
        "prompt_id": "q",
        "stage": "preference",
        "kind": "verdict",
        "text": "won 1",
        "agent": "pairwise",
        "model": "judge-model",
        "index": index,
        "selected": True,
        "score": None,
        "meta": json.dumps(details),
    }


def test_a_pair_with_both_orders_of_every_verdict_and_why_it_was_kept():
    row = {"prompt_id": "q", "prompt": [{"role": "user", "content": "Capital of France?"}],
           "chosen": [{"role": "assistant", "content": "Paris, on the Seine."}],
           "rejected": [{"role": "assistant", "content": "Lyon."}], "score_chosen": 1.0, "score_rejected": 0.0,
           "chosen_model": "m", "rejected_model": "m",
           "verification": {"chosen": {"status": "pass"}, "rejected": {"status": "fail"}}}  # fmt: skip
    steps = [
        _sample(0, "Lyon.", 0.0, "rejected"), _sample(1, "Paris, on the Seine.", 1.0, "chosen"),
        _sample(2, "Paris.", 0.5),
        _verdict(0, [(1, "B", "A", "second", True), (2, "A", "A", "tie", False)]),
        _verdict(1, [(2, "A", "B", "first", True)]), _verdict(2, []),
        {"prompt_id": "q", "stage": "preference", "kind": "verification", "text": "pass", "index": 1, "meta": "{}"},
    ]  # fmt: skip
    pair = build_pair(row, steps, MANIFEST)
    assert [(c.index, c.pick, c.score) for c in pair.candidates] == [(0, "rejected", 0.0), (1, "chosen", 1.0),
                                                                     (2, "", 0.5)]  # fmt: skip
    first = pair.comparisons[0]
    assert (first.first, first.second, first.is_pair) == (0, 1, True)
    assert (first.winner("ab"), first.winner("ba")) == ("#1 won", "#1 won")  # B when 0 was first, A when 1 was
    assert (first.ab_why, first.ba_why) == ("ab 0-1", "ba 0-1")
    biased = pair.comparisons[1]
    assert (biased.winner("ab"), biased.winner("ba"), biased.agree, biased.outcome) == ("#0 won", "#2 won", False,
                                                                                        "tie")  # fmt: skip
    assert pair.margin == 1.0 and pair.scorer == "pairwise"
    assert pair.why == [
        "chosen #1 has the highest score and rejected #0 the lowest of 3 scored candidates",
        "margin 1 ≥ min_margin 0.5",
        "length chosen / rejected 4.00 > max_length_ratio 2: the run's settings now would drop this pair",
        "verification: chosen pass, rejected fail",
    ]
    assert [s["kind"] for s in pair.others] == ["verification"]
    assert first.odds is None and first.weighted == ""
    assert [t for t, tag in pair.chosen if tag == "ins"] == ["Paris, on the Seine."]


def test_a_weighted_pairwise_verdict_shows_each_order_probability_and_a_verdict_only_reply():
    steps = [
        _sample(0, "a", 0.2, "rejected"),
        _sample(1, "b", 0.8, "chosen"),
        _verdict(0, [(1, "B", "A", "second", True)]),
    ]
    details = json.loads(steps[2]["meta"])
    details["pairs"][0] |= {"orders": [0.3, 0.1], "preference": 0.2, "weighted_outcome": "second",
                            "raw_ab": ['{"winner": "B"}'], "raw_ba": ['{"winner": "A"}']}  # fmt: skip
    steps[2]["meta"] = json.dumps(details)
    row = {
        "prompt_id": "q",
        "prompt": [],
        "chosen": [{"role": "assistant", "content": "b"}],
        "rejected": [{"role": "assistant", "content": "a"}],
        "score_chosen": 0.8,
        "score_rejected": 0.2,
    }
    (comparison,) = build_pair(row, steps, MANIFEST).comparisons
    assert comparison.odds == (0.3, 0.1) and comparison.weighted == "the second won (P 0.2)"
    assert comparison.ab_why == "(a verdict only: no rationale was asked for)"
