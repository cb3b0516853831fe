"""Pair building and ranking: exact expected pairs for ties, margins, both-order disagreement,
unscored candidates, the length-ratio cap and collapsed identical candidates."""

from __future__ import annotations

import pytest

from moaa.preference.candidates import collapse, conversation_of, normalise
from moaa.preference.pairs import PairChoice, build_row, choose_pair
from moaa.preference.pairwise_judge import combine_orders, rank_pairwise

T3 = ["alpha", "bravo", "charlie"]


@pytest.mark.parametrize(
    "texts, scores, margin, ratio, expected",
    [
        (T3, [4.0, 2.0, 3.0], 0.5, None, PairChoice(0, 1)),
        (T3, [2.0, 5.0, 1.0], 0.5, None, PairChoice(1, 2)),
        (T3, [3.0, 3.0, 3.0], 0.5, None, PairChoice(reason="tie")),
        (T3, [3.0, 3.0, 3.0], 0.0, None, PairChoice(reason="tie")),
        (T3, [3.0, 3.2, 3.1], 0.5, None, PairChoice(reason="near_tie")),
        (T3, [4.5, 4.0, 4.25], 0.5, None, PairChoice(0, 1)),  # a margin equal to min_margin is kept
        (T3, [3.0, 3.2, 3.1], 0.0, None, PairChoice(1, 0)),
        (T3, [5.0, 5.0, 1.0], 0.5, None, PairChoice(0, 2)),  # tied best: the earlier one
        (T3, [5.0, 1.0, 1.0], 0.5, None, PairChoice(0, 1)),  # tied worst: the earlier one
        (T3, [None, 3.0, 1.0], 0.5, None, PairChoice(1, 2)),  # unscored candidates are skipped
        (T3, [None, 3.0, None], 0.5, None, PairChoice(reason="too_few_scored")),
        (T3, [None, None, None], 0.5, None, PairChoice(reason="too_few_scored")),
        (["only"], [5.0], 0.5, None, PairChoice(reason="too_few_candidates")),
        (["x" * 30, "y" * 10], [5.0, 1.0], 0.5, 2.0, PairChoice(reason="length_ratio")),
        (["x" * 30, "y" * 10], [5.0, 1.0], 0.5, 3.0, PairChoice(0, 1)),  # ratio 3.0 does not exceed 3.0
        (["y" * 10, "x" * 30], [5.0, 1.0], 0.5, 1.5, PairChoice(0, 1)),  # only a longer chosen is capped
        (["same text", " same  text "], [5.0, 1.0], 0.5, None, PairChoice(reason="tie")),
    ],
)
def test_choose_pair(texts, scores, margin, ratio, expected):
    assert choose_pair(texts, scores, margin, ratio) == expected


@pytest.mark.parametrize(
    "ab, ba, expected",
    [
        ("A", "B", ("first", True)),  # A/B says first, B/A says first (now in position B)
        ("B", "A", ("second", True)),
        ("A", "A", ("tie", False)),  # position bias: whatever is shown first wins
        ("B", "B", ("tie", False)),
        ("tie", "tie", ("tie", True)),
        ("A", "tie", ("tie", False)),
        ("tie", "A", ("tie", False)),
        (None, "A", (None, None)),  # an unanswered order leaves the pair unscored
        ("B", None, (None, None)),
    ],
)
def test_combine_orders(ab, ba, expected):
    assert combine_orders(ab, ba) == expected


@pytest.mark.parametrize(
    "n, outcomes, expected",
    [
        (3, [(0, 1, "first"), (0, 2, "first"), (1, 2, "second")], [1.0, 0.0, 0.5]),
        (3, [(0, 1, "tie"), (0, 2, "tie"), (1, 2, "tie")], [0.5, 0.5, 0.5]),
        (3, [(0, 1, "second"), (0, 2, "tie"), (1, 2, None)], [0.25, 1.0, 0.5]),
        (3, [(0, 1, None), (0, 2, None), (1, 2, "first")], [None, 1.0, 0.0]),
        # two judges: each pair is judged twice
        (2, [(0, 1, "first"), (0, 1, "tie")], [0.75, 0.25]),
    ],
)
def test_rank_pairwise(n, outcomes, expected):
    as_preference = [(i, j, HARD[outcome]) for i, j, outcome in outcomes]
    assert [score for score, _ in rank_pairwise(n, as_preference)] == expected


HARD = {"first": 1.0, "tie": 0.5, "second": 0.0, None: None}


def test_rank_pairwise_tallies():
    (_, t0), (_, t1), (_, t2) = rank_pairwise(3, [(0, 1, 0.0), (0, 2, 0.5), (1, 2, None)])
    assert t0 == {"wins": 0, "ties": 1, "losses": 1}
    assert t1 == {"wins": 1, "ties": 0, "losses": 0}
    assert t2 == {"wins": 0, "ties": 1, "losses": 0}


def test_weighted_preferences_rank_by_their_mean_and_tie_within_the_threshold():
    # AlpacaEval 2's weighted win rate: the mean of each candidate's probability of being preferred
    ranked = rank_pairwise(3, [(0, 1, 0.8), (0, 2, 0.54), (1, 2, 0.3)], tie_threshold=0.05)
    assert [round(score, 4) for score, _ in ranked] == [0.67, 0.25, 0.58]
    assert [t for _, t in ranked] == [
        {"wins": 1, "ties": 1, "losses": 0},
        {"wins": 0, "ties": 0, "losses": 2},
        {"wins": 1, "ties": 1, "losses": 0},
    ]


def test_identical_candidates_collapse_and_empty_ones_drop():
    texts = ["Paris.", "  Paris. ", "", "Lyon.", "Paris.\n", "   ", "Lyon is  nice.", "Lyon is nice."]
    got = collapse(texts, ["stop"] * len(texts), "policy-model")
    assert [(c.index, c.text, c.count, c.samples) for c in got.candidates] == [
        (0, "Paris.", 3, [0, 1, 4]),
        (1, "Lyon.", 1, [3]),
        (2, "Lyon is  nice.", 2, [6, 7]),
    ]
    assert (got.sampled, got.empty, got.duplicates) == (8, 2, 3)
    assert {c.model for c in got.candidates} == {"policy-model"}


def test_normalise_and_conversation_of():
    assert normalise("  a \n\t b  ") == "a b"
    convo = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "old"},
    ]
    assert conversation_of(convo) == convo[:2]


def test_build_row_is_trl_preference_format():
    row = build_row("p1", [{"role": "user", "content": "q"}], "good", "bad", 4, 2.5, "m1", "m1", "big", "small")
    assert row.to_dict() == {
        "prompt_id": "p1",
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
        "score_chosen": 4.0,
        "score_rejected": 2.5,
        "chosen_model": "m1",
        "rejected_model": "m1",
        "chosen_agent": "big",
        "rejected_agent": "small",
        "verification": None,
        "reference": None,
    }
