"""moaa.preference.score_details: a Score's typed details and the JSON form the trace keeps.

Run: .venv/bin/python -m pytest tests/test_score_details.py -x -q
"""

from __future__ import annotations

from moaa.preference.score_details import PairRecord, ScoreDetail, Usage


def test_the_trace_keeps_only_the_fields_a_scorer_set():
    detail = ScoreDetail(criteria=["helpfulness"], usage=Usage(calls=2, unparsed=1), error="")
    assert detail.to_json() == {
        "criteria": ["helpfulness"],
        "usage": {"calls": 2, "prompt_tokens": 0, "completion_tokens": 0, "unparsed": 1},
        "error": "",
    }
    assert detail.usage is not None and detail.usage.calls == 2 and detail.ratings is None and detail.error == ""
    assert not hasattr(detail, "__getitem__") and not hasattr(detail, "get")  # read by field, not by JSON key


def test_a_verifier_score_keeps_its_verdict_even_without_a_check():
    assert ScoreDetail(verified=True).to_json() == {"verdict": None}
    broken = ScoreDetail(verified=True, tie_break=0.5, judge=ScoreDetail(reward_model="rm", templated=True))
    assert broken.to_json() == {
        "verdict": None,
        "tie_break": 0.5,
        "usage": {},
        "judge": {"reward_model": "rm", "templated": True},
    }


def test_a_pair_reads_back_from_the_trace():
    weighted = PairRecord("j", 2, "A", "B", "first", True, ["a"], ["b"], 0.8, [0.9, 0.7], "first")
    hard = PairRecord("j", 1, None, "B", None, None, error="no parsable verdict")
    for pair in (weighted, hard):
        assert PairRecord.from_json(pair.to_json()) == pair
    assert "orders" not in hard.to_json() and "error" not in weighted.to_json()
