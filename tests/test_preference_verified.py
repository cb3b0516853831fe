"""Verified preference pairs against a real OpenAI-compatible test server: the `verifier` scorer pairs a
passing answer with a failing one (a judge breaking ties only), drops what it cannot pair by a named
reason, and any other scorer's pair is dropped when its chosen answer fails the prompt's check."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from moaa.config import EndpointConfig, PreferenceConfig, VerifyConfig
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.preference import calls_per_prompt, judge_prompt
from moaa.prompts.criteria import ASPECTS
from moaa.rows import Prompt, Reference
from moaa.testing.openai_server import OpenAITestServer
from moaa.verify import Verifier
from tests.verify_helpers import Script, Tutor, python

QUESTION = "The angles of a triangle are in the ratio 2:3:4. What is the size of the largest angle in degrees?"
CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
KEYS = [a.key for a in ASPECTS]


class Judged:
    """Policy samples from a Tutor; a pointwise judge rating each candidate by `rating(text)`."""

    def __init__(self, samples: list[str], rating: Any = lambda text: 3):
        self.tutor = Tutor({QUESTION: Script([], "", samples=samples)})
        self.rating = rating
        self.judged: list[str] = []

    def __call__(self, request: dict) -> str | list[str] | None:
        shown = CANDIDATE_RE.findall(request["messages"][-1]["content"])
        if shown:
            self.judged.append(shown[0][1])
            rating = self.rating(shown[0][1])
            return json.dumps({k: {"rationale": f"{k}={rating}", "rating": rating} for k in KEYS})
        return self.tutor(request)


def pref(**overrides: Any) -> PreferenceConfig:
    raw = {
        "enabled": True,
        "policy": {"endpoint": "test", "temperature": 1.0, "role": "policy"},
        "samples": 4,
        "scorer": {"kind": "verifier", "judges": [{"endpoint": "test", "temperature": 0.0}]},
        "min_margin": 0.5,
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = raw[section] | {field: value}
        else:
            raw[key] = value
    return PreferenceConfig.model_validate(raw)


EIGHTY = Reference(answer="80")


def judge(responder: Judged, config: PreferenceConfig, reference: Reference | None = EIGHTY, question: str = QUESTION):
    prompt = Prompt.from_messages([{"role": "user", "content": question}])
    prompt.reference = reference

    async def go():
        with OpenAITestServer(responder=responder) as srv:
            endpoint = EndpointConfig(model="m", base_url=srv.base_url, max_retries=0, backoff_s=0.01)
            client = OpenAIChatClient("test", endpoint, RunStats(), api_key="k")
            try:
                verifier = Verifier(VerifyConfig())
                return await judge_prompt(prompt, config, {"test": client}, verifier=verifier)
            finally:
                await client.aclose()

    return asyncio.run(go())


def test_chosen_passes_rejected_fails_and_the_judge_only_breaks_ties():
    samples = ["It is 80.", "It is 9.", "The largest angle is 80 degrees.", "The answer is 72."]
    judged = Judged(samples, rating=lambda text: 5 if "largest" in text or "72" in text else 2)
    result = judge(judged, pref())
    row = result.row
    assert (row.chosen[0]["content"], row.rejected[0]["content"]) == ("The largest angle is 80 degrees.", "It is 9.")
    assert (row.score_chosen, row.score_rejected) == (1.0, 0.0)
    assert row.verification["chosen"]["status"] == "pass" and row.verification["rejected"]["status"] == "fail"
    assert sorted(judged.judged) == sorted(samples)  # two passing and two failing tied at 0: all contested
    assert result.counters["candidates_pass"] == 2 and result.counters["candidates_fail"] == 2
    assert result.counters["pairs_verified"] == 1
    steps = [(t.agent, t.index, t.selected) for t in result.trace if t.kind == "verification"]
    assert steps == [("candidate", 0, True), ("candidate", 1, False), ("candidate", 2, True), ("candidate", 3, False)]


def test_one_passing_and_one_lowest_failing_candidate_need_no_judge():
    code = "Write a Python function triple(x) that returns 3 * x."
    tests = Reference(tests=("assert triple(1) == 3", "assert triple(2) == 6", "assert triple(0) == 0"))
    samples = [python("def triple(x):\n    return 3 * x"), python("def triple(x):\n    return x + 2"),
               python("def triple(x):\n    return x * x * 3")]  # fmt: skip
    responder = Judged(samples)
    responder.tutor = Tutor({code: Script([], "", samples=samples)})
    result = judge(responder, pref(samples=3), tests, code)
    # passes 3/3 | 1 of 3 (triple(1) == 3 only) | 2 of 3 (0 and 1): the 1-of-3 one is rejected
    assert result.row.rejected[0]["content"] == samples[1].strip() and result.row.score_rejected == pytest.approx(1 / 3)
    assert result.row.chosen[0]["content"] == samples[0].strip() and responder.judged == []


@pytest.mark.parametrize(
    "samples, overrides, dropped",
    [
        (["It is 9.", "It is 72.", "About 4.5."], {}, "all_failed"),
        (["It is 80.", "80 degrees."], {"scorer__verifier": {"all_passed": "drop"}}, "all_passed"),
    ],
)
def test_what_the_verdicts_cannot_pair_is_dropped_by_name(samples, overrides, dropped):
    judged = Judged(samples)
    result = judge(judged, pref(**overrides))
    assert result.row is None and result.dropped == dropped and judged.judged == []


def test_all_passing_candidates_fall_back_to_the_judge():
    judged = Judged(["It is 80.", "80 degrees, since 4/9 of 180 is 80."], rating=lambda t: 5 if "since" in t else 1)
    row = judge(judged, pref()).row
    assert row.chosen[0]["content"].endswith("is 80.") and "since" in row.chosen[0]["content"]
    assert (row.score_chosen, row.score_rejected) == (5.0, 1.0)  # the judge decided: its scores
    assert row.verification["rejected"]["status"] == "pass"


def test_a_prompt_without_a_check_is_judged_or_dropped_as_unverifiable():
    samples = ["Paris.", "Lyon."]
    judged = judge(Judged(samples, rating=lambda t: 5 if "Paris" in t else 1), pref(), reference=None)
    row = judged.row
    assert row.chosen[0]["content"] == "Paris." and row.verification is None
    assert judged.counters["unscored"] == 0  # no verdict, but the judge scored both (the summary's count)
    dropped = judge(Judged(samples), pref(scorer__verifier={"unverifiable": "drop"}), reference=None)
    assert dropped.dropped == "unverifiable" and dropped.counters["verify_none"] == 1


def test_another_scorers_wrong_chosen_side_is_dropped_unless_kept():
    samples = ["It is 9, clearly.", "It is 80."]
    loves_nine = Judged(samples, rating=lambda t: 5 if "9" in t else 1)
    pointwise = {"kind": "pointwise", "judges": [{"endpoint": "test", "temperature": 0.0}]}
    result = judge(loves_nine, pref(scorer=pointwise, samples=2))
    assert result.row is None and result.dropped == "chosen_failed"
    assert [(t.agent, t.text) for t in result.trace if t.kind == "verification"] == [
        ("chosen", "final answer 9 does not match the reference 80"),
        ("rejected", "final answer 80 matches the reference 80"),
    ]
    keep = pref(scorer=pointwise, samples=2, verify="keep")
    kept = judge(Judged(samples, rating=lambda t: 5 if "9" in t else 1), keep)
    assert kept.row.chosen[0]["content"] == "It is 9, clearly."
    assert kept.row.verification["chosen"]["status"] == "fail"


def test_the_dry_run_counts_the_tie_breakers_calls_as_an_upper_bound():
    plan = calls_per_prompt(pref())
    assert plan["scorer"] == "verifier" and plan["agents"]["scorer.judges[0]"]["calls"] == 4


def test_a_verifier_without_judges_or_reward_model_needs_no_tie_breaker():
    config = pref(scorer={"kind": "verifier"})
    assert config.scorer.judged_kind() == "none"
    result = judge(Judged(["It is 80.", "It is 9."]), config)
    assert result.row.chosen[0]["content"] == "It is 80." and result.row.rejected[0]["content"] == "It is 9."
