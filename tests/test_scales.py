"""Margins in the scorer's own units (moaa.config.scales): each kind's scale and default, min_margin as a
number, a share of the scale or per kind, the one-line errors, and what the dry run says."""

from __future__ import annotations

import pytest

from moaa.config import PreferenceConfig, load_config
from moaa.config.scales import describe_margin
from moaa.preference.pairs import choose_pair
from tests.conftest import ROOT

LOCAL = str(ROOT / "configs/local.yaml")


def pref(min_margin, kind: str = "pointwise") -> PreferenceConfig:
    return PreferenceConfig.model_validate({"min_margin": min_margin, "scorer": {"kind": kind}})


@pytest.mark.parametrize(
    "min_margin, kind, expected",
    [
        (None, "pointwise", 0.5),
        (None, "moa_judge", 0.5),
        (None, "pairwise", 0.1),
        (None, "reward_model", 0.0),
        (0.1, "pointwise", 0.1),  # a number is in the scorer's own units, as before
        (0.02, "reward_model", 0.02),
        ("10%", "pointwise", 0.4),  # a share of the 1-5 scale
        ("25%", "pairwise", 0.25),
        ({"pairwise": "20%", "reward_model": 0.01}, "pairwise", 0.2),
        ({"pairwise": "20%", "reward_model": 0.01}, "reward_model", 0.01),
        ({"pairwise": "20%"}, "pointwise", 0.5),  # a kind not named keeps its default
    ],
)
def test_the_margin_is_resolved_in_the_scorers_units(min_margin, kind, expected):
    assert pref(min_margin, kind).margin() == pytest.approx(expected)


@pytest.mark.parametrize(
    "min_margin, kind, message",
    [
        ("10%", "reward_model", "min_margin: '10%' is a share of the scale, but reward_model scores have no fixed"),
        ({"reward_model": "5%"}, "pointwise", "min_margin.reward_model: '5%' is a share of the scale"),
        ({"pointwize": 0.5}, "pointwise", "min_margin: no scorer kind pointwize (kinds: pointwise, moa_judge"),
        (-0.5, "pointwise", "min_margin: -0.5 is negative; give 0 or more"),
        ("half", "pointwise", "min_margin: 'half' is neither a number nor a percentage such as '10%'"),
    ],
)
def test_a_margin_that_means_nothing_is_an_error_naming_the_key(min_margin, kind, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pref(min_margin, kind)


@pytest.mark.parametrize(
    "kind, scores",
    [
        ("reward_model", [0.12, 0.15, 0.09, 0.18, 0.11]),  # ArmoRM-like: five samples of one prompt
        ("pairwise", [0.625, 0.375]),  # one candidate won more of its comparisons
    ],
)
def test_the_defaults_keep_the_pairs_the_old_half_point_dropped(kind, scores):
    texts = [f"answer {i}" for i in range(len(scores))]
    assert choose_pair(texts, scores, 0.5).reason == "near_tie"  # 0.5 in every scorer's units
    choice = choose_pair(texts, scores, pref(None, kind).margin())
    assert choice.reason is None and (scores[choice.chosen], scores[choice.rejected]) == (max(scores), min(scores))


def test_local_yaml_keeps_its_margin_on_weighted_ratings():
    config = load_config(LOCAL)
    scorer = config.preference.scorer  # the verifier, its pointwise judge breaking ties on weighted ratings
    assert (scorer.kind, scorer.judged_kind()) == ("verifier", "pointwise") and config.preference.margin() == 0.1


@pytest.mark.parametrize(
    "min_margin, kind, text",
    [
        (None, "pointwise", "min_margin 0.5 (the pointwise default, 12.5% of the scale) on pointwise scores "
                            "(mean rating, 1-5): a pair whose best and worst differ by less is a near_tie"),
        ("10%", "pointwise", "min_margin 0.4 (10% of the scale) on pointwise scores (mean rating, 1-5)"),
        (0.1, "pairwise", "min_margin 0.1 (as set, 10.0% of the scale) on pairwise scores (share of comparisons"),
        (None, "reward_model", "min_margin 0 (the reward_model default) on reward_model scores (reward in the "
                               "model's own units, no fixed scale): only exact ties are dropped"),
    ],
)  # fmt: skip
def test_describe_margin_says_what_it_means(min_margin, kind, text):
    assert describe_margin(min_margin, kind).startswith(text)


def test_the_dry_run_says_what_the_margin_means(capsys):
    from moaa.cli import main

    assert main(["run", LOCAL, "--dry-run", "--set", "preference.min_margin=10%"]) == 0
    out = capsys.readouterr().out
    assert "  pairs: min_margin 0.4 (10% of the scale) on pointwise scores (mean rating, 1-5)" in out
