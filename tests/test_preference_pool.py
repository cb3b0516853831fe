"""Preference pools against a real OpenAI-compatible test server serving several models by name: every
agent's samples in the recorded counts and credited to it, one-side-from pairs, delta pairs kept only
where the scorer (or verifier) agrees, the mixture's SFT answer as a candidate, and call counts equal
to the dry run's. Whole runs with a pool are in tests/test_preference_pool_runs.py."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from moaa.config import EndpointConfig, PreferenceConfig, VerifyConfig
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.preference import calls_per_prompt, judge_prompt
from moaa.preference.pool import SFTAnswer
from moaa.prompts.criteria import ASPECTS
from moaa.rows import Prompt, Reference
from moaa.testing.openai_server import OpenAITestServer
from moaa.verify import Verifier

PROMPT = Prompt.from_messages([{"role": "user", "content": "The angles of a triangle are 2:3:4. Largest angle?"}])
CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
KEYS = [a.key for a in ASPECTS]


class Models:
    """Each model answers by its script: `answers[model]` is a list of texts (one per sample, cycled);
    the judge model rates a candidate by the digit after its last 'q'."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.asked: dict[str, int] = {}  # one-choice calls (a server that ignores n) take the texts in turn

    def __call__(self, request: dict) -> str | list[str]:
        shown = CANDIDATE_RE.findall(request["messages"][-1]["content"])
        if shown:
            rating = int(shown[0][1].rsplit("q", 1)[1][0])
            return json.dumps({k: {"rationale": "r", "rating": rating} for k in KEYS})
        texts, model = self.answers[request["model"]], request["model"]
        if not request.get("n"):
            self.asked[model] = self.asked.get(model, -1) + 1
            return texts[self.asked[model] % len(texts)]
        return [texts[i % len(texts)] for i in range(request["n"])]


ENDPOINTS = ("big", "mid", "small", "student", "judge")


def pref(**raw: Any) -> PreferenceConfig:
    base = {"enabled": True, "scorer": {"kind": "pointwise", "judges": [{"endpoint": "judge"}]}, "min_margin": 0.5}
    return PreferenceConfig.model_validate(base | raw)


def agent(name: str, samples: int = 1, **extra: Any) -> dict[str, Any]:
    return {"endpoint": name, "name": name, "samples": samples, "temperature": 0.8} | extra


def judge(
    answers: dict[str, list[str]], cfg: PreferenceConfig, prompt: Prompt = PROMPT, **kwargs: Any
) -> tuple[Any, list[dict]]:
    """One prompt through judge_prompt, every endpoint a model of one test server; (result, chat requests)."""

    async def go():
        with OpenAITestServer(responder=Models(answers), ignore_n=kwargs.pop("ignore_n", False)) as srv:
            clients = {
                name: OpenAIChatClient(
                    name, EndpointConfig(base_url=srv.base_url, model=f"{name}-m", max_retries=0), RunStats(), "k"
                )
                for name in ENDPOINTS
            }
            try:
                result = await judge_prompt(prompt, cfg, clients, **kwargs)
            finally:
                for client in clients.values():
                    await client.aclose()
            return result, [r for r in srv.requests if r["path"] == "/v1/chat/completions"]

    return asyncio.run(go())


def sides(result: Any) -> tuple[str, str, str, str]:
    row = result.row
    return row.chosen[0]["content"], row.rejected[0]["content"], row.chosen_agent, row.rejected_agent


def test_a_pool_of_three_gives_each_agents_samples_credited_to_it():
    answers = {
        "big-m": ["big one q5", "big two q4"],
        "mid-m": ["mid one q3"],
        "small-m": ["small one q2", "small two q1", "small three q2"],
    }
    cfg = pref(candidates=[agent("big", 2), agent("mid"), agent("small", 3)])
    result, sent = judge(answers, cfg)
    samples = [t for t in result.trace if t.kind == "sample"]
    by_agent = {a: sorted(t.text for t in samples if t.agent == a) for a in ("big", "mid", "small")}
    assert by_agent == {
        "big": ["big one q5", "big two q4"],
        "mid": ["mid one q3"],
        "small": ["small one q2", "small three q2", "small two q1"],
    }
    assert all(t.model == f"{t.agent}-m" for t in samples)
    assert sides(result) == ("big one q5", "small two q1", "big", "small")
    assert (result.row.chosen_model, result.row.rejected_model) == ("big-m", "small-m")
    asked = [(r["model"], r["body"].get("n")) for r in sent if r["model"] != "judge-m"]
    assert sorted(asked) == [("big-m", 2), ("mid-m", None), ("small-m", 3)]
    assert result.counters["samples"] == 6
    # One seed per agent: two agents on the same model would not ask the same question.
    assert len({r["body"]["seed"] for r in sent if r["model"] != "judge-m"}) == 3
    counts = calls_per_prompt(cfg)
    assert counts["calls"] == len(sent) and counts["samples"] == 6
    assert {label: a["calls"] for label, a in counts["agents"].items()} == {
        "candidates[0]": 1, "candidates[1]": 1, "candidates[2]": 1, "scorer.judges[0]": 6,
    }  # fmt: skip


def test_the_same_text_from_two_agents_is_one_candidate_credited_to_the_first():
    answers = {"big-m": ["Paris q5", "Lima q1"], "small-m": ["Paris  q5", "Oslo q3"]}
    result, _ = judge(answers, pref(candidates=[agent("big", 2), agent("small", 2)]))
    samples = {t.text: (t.agent, json.loads(t.meta)) for t in result.trace if t.kind == "sample"}
    assert samples["Paris q5"][0] == "big" and samples["Paris q5"][1]["also"] == ["small"]
    assert samples["Paris q5"][1]["count"] == 2 and result.counters["duplicates"] == 1


def test_a_failing_agent_fails_the_prompt_naming_it_after_the_others_answered():
    answers = {"big-m": ["Paris q5"]}  # small's model has no script: the server answers 500
    result, sent = judge(answers, pref(candidates=[agent("big"), agent("small")]))
    assert result.failure.reason == "policy_failed" and result.failure.transient
    assert "small (candidates[1], endpoint small)" in result.failure.error
    assert {r["model"] for r in sent} == {"big-m", "small-m"}


ONE_SIDE = {
    "big-m": ["big q5"],
    "small-m": ["small q1"],
    "student-m": ["student good q4", "student bad q3"],
}


@pytest.mark.parametrize(
    "pairing, expected",
    [
        (None, ("big q5", "small q1", "big", "small")),  # best vs worst holds no student answer
        ({"one_side_from": "student"}, ("student good q4", "small q1", "student", "small")),
        ({"one_side_from": "big"}, ("big q5", "small q1", "big", "small")),
        ({"one_side_from": "small"}, ("big q5", "small q1", "big", "small")),
    ],
)
def test_one_side_from_pairs_always_hold_an_answer_of_that_agent(pairing, expected):
    cfg = pref(
        candidates=[agent("big"), agent("small"), agent("student", 2)], **({"pairing": pairing} if pairing else {})
    )
    result, _ = judge(ONE_SIDE, cfg)
    assert sides(result) == expected


def test_one_side_from_takes_the_agents_answer_as_rejected_where_it_scores_lowest():
    answers = {"big-m": ["big q5"], "mid-m": ["mid q4"], "student-m": ["student q1"]}
    cfg = pref(candidates=[agent("big"), agent("mid"), agent("student")], pairing={"one_side_from": "student"})
    assert sides(judge(answers, cfg)[0]) == ("big q5", "student q1", "big", "student")


@pytest.mark.parametrize(
    "strong, weak, outcome",
    [
        (["strong q5"], ["weak q2"], ("strong q5", "weak q2", "big", "small")),
        (["strong q2"], ["weak q5"], "reversed"),  # the scorer disagrees with the order: no pair
        (["strong q3"], ["weak q3"], "tie"),
        (["strong q4", "strong q3"], ["weak q4", "weak q5"], "tie"),  # the best strong vs the worst weak
        (["strong q3", "strong q2"], ["weak q4", "weak q5"], "reversed"),
        (["strong q4", "strong q2"], ["weak q4", "weak q1"], ("strong q4", "weak q1", "big", "small")),
    ],
)
def test_delta_pairs_keep_only_the_orders_the_scorer_agrees_with(strong, weak, outcome):
    cfg = pref(
        candidates=[agent("big", len(strong)), agent("small", len(weak))],
        pairing={"delta": {"stronger": "big", "weaker": "small"}},
    )
    result, _ = judge({"big-m": strong, "small-m": weak}, cfg)
    if isinstance(outcome, tuple):
        assert sides(result) == outcome
    else:
        assert result.row is None and result.dropped == outcome


def test_delta_margin_drops_a_near_tie():
    cfg = pref(
        candidates=[agent("big"), agent("small")],
        pairing={"delta": {"stronger": "big", "weaker": "small"}},
        min_margin=2.0,
    )
    result, _ = judge({"big-m": ["strong q4"], "small-m": ["weak q3"]}, cfg)
    assert result.dropped == "near_tie"


RIGHT, WRONG = "The largest angle is \\boxed{80}. q3", "The largest angle is \\boxed{70}. q3"
RIGHT_Q5, RIGHT_Q1 = "So \\boxed{80}, well put. q5", "So \\boxed{80}. q1"


@pytest.mark.parametrize(
    "strong, weak, outcome",
    [
        ([RIGHT], [WRONG], (RIGHT, WRONG)),
        ([WRONG], [RIGHT], "reversed"),  # a failing "strong" answer is never chosen, however it is rated
        ([WRONG], [WRONG + " again"], "all_failed"),
        ([RIGHT_Q5], [RIGHT_Q1], (RIGHT_Q5, RIGHT_Q1)),  # both pass: the judge orders them (all_passed: judge)
        ([RIGHT_Q1], [RIGHT_Q5], "reversed"),  # ... and may disagree with the order
    ],
)
def test_delta_with_the_verifier_chooses_a_passing_stronger_answer_only(strong, weak, outcome):
    cfg = pref(
        candidates=[agent("big"), agent("small")],
        pairing={"delta": {"stronger": "big", "weaker": "small"}},
        scorer={"kind": "verifier", "judges": [{"endpoint": "judge"}]},
    )
    prompt = Prompt.from_messages(PROMPT.messages)
    prompt.reference = Reference(answer="80")
    result, _ = judge({"big-m": strong, "small-m": weak}, cfg, prompt, verifier=Verifier(VerifyConfig()))
    if isinstance(outcome, tuple):
        assert sides(result)[:2] == outcome and result.row.verification["chosen"]["status"] == "pass"
    else:
        assert result.row is None and result.dropped == outcome


def test_a_judges_delta_pair_with_a_failing_stronger_answer_is_dropped_chosen_failed():
    cfg = pref(candidates=[agent("big"), agent("small")], pairing={"delta": {"stronger": "big", "weaker": "small"}})
    prompt = Prompt.from_messages(PROMPT.messages)
    prompt.reference = Reference(answer="80")
    wrong_but_rated, right = "So \\boxed{70}. q5", "So \\boxed{80}. q1"
    result, _ = judge({"big-m": [wrong_but_rated], "small-m": [right]}, cfg, prompt, verifier=Verifier(VerifyConfig()))
    assert result.row is None and result.dropped == "chosen_failed"


def test_a_wrong_mixture_answer_is_never_chosen_over_a_right_student_answer():
    cfg = pref(
        candidates=[agent("student", 2)],
        include_sft_answer=True,
        pairing={"one_side_from": "student"},
        scorer={"kind": "verifier", "judges": [{"endpoint": "judge"}]},
    )
    prompt = Prompt.from_messages(PROMPT.messages)
    prompt.reference = Reference(answer="80")
    mixture = {prompt.prompt_id: SFTAnswer(WRONG, "agg-m")}
    result, _ = judge(
        {"student-m": [RIGHT, RIGHT + "!"]}, cfg, prompt, verifier=Verifier(VerifyConfig()), sft_answers=mixture
    )
    assert sides(result) == (RIGHT, WRONG, "student", "mixture")


SFT_TEXT = "  The mixture's answer, kept as written:\n\n1. exact q5\n"


@pytest.mark.parametrize(
    "pairing, expected",
    [
        ({"delta": {"stronger": "mixture", "weaker": "student"}}, (SFT_TEXT, "student q2", "mixture", "student")),
        ({"one_side_from": "student"}, (SFT_TEXT, "student q2", "mixture", "student")),
        (None, (SFT_TEXT, "student q2", "mixture", "student")),
    ],
)
def test_include_sft_answer_pairs_hold_the_sft_rows_exact_text(pairing, expected):
    cfg = pref(
        policy={"endpoint": "student", "name": "student", "temperature": 1.0},
        samples=2,
        include_sft_answer=True,
        **({"pairing": pairing} if pairing else {}),
    )
    mixture = {PROMPT.prompt_id: SFTAnswer(SFT_TEXT, "agg-m")}
    result, sent = judge({"student-m": ["student q3", "student q2"]}, cfg, sft_answers=mixture)
    assert sides(result) == expected and result.row.chosen_model == "agg-m"
    assert result.counters["sft_answers"] == 1
    step = next(t for t in result.trace if t.kind == "sample" and t.agent == "mixture")
    assert (step.text, step.role) == (SFT_TEXT, "mixture")
    # The mixture costs no call; the judge rates three candidates, as the dry run counts.
    assert calls_per_prompt(cfg)["calls"] == len(sent) == 1 + 3


def test_a_prompt_without_an_sft_answer_is_counted_and_paired_without_it():
    cfg = pref(policy={"endpoint": "student", "temperature": 1.0}, samples=2, include_sft_answer=True)
    result, _ = judge({"student-m": ["student q3", "student q1"]}, cfg, sft_answers={})
    assert result.counters["sft_answer_missing"] == 1 and sides(result)[2:] == ("policy", "policy")


def test_delta_against_a_missing_mixture_is_dropped_side_missing():
    cfg = pref(
        candidates=[agent("student", 2)],
        include_sft_answer=True,
        pairing={"delta": {"stronger": "mixture", "weaker": "student"}},
    )
    result, _ = judge({"student-m": ["student q3", "student q1"]}, cfg, sft_answers={})
    assert result.row is None and result.dropped == "side_missing"


def test_pool_calls_per_prompt_equal_requests_where_the_server_ignores_n():
    endpoints = {n: EndpointConfig(base_url="http://127.0.0.1:9/v1", model=f"{n}-m", supports_n=False)
                 for n in ENDPOINTS}  # fmt: skip
    cfg = pref(
        candidates=[agent("big", 2), agent("small", 3)], scorer={"kind": "pairwise", "judges": [{"endpoint": "judge"}]}
    )
    answers = {"big-m": ["b q5", "b q4"], "small-m": ["s q1", "s q2", "s q3"]}

    models = Models(answers)

    def pairwise(request: dict) -> str | list[str]:
        shown = dict(CANDIDATE_RE.findall(request["messages"][-1]["content"]))
        if "A" in shown:
            a, b = (int(shown[k].rsplit("q", 1)[1][0]) for k in "AB")
            return json.dumps({"rationale": "", "winner": "tie" if a == b else ("A" if a > b else "B")})
        return models(request)

    async def go():
        with OpenAITestServer(responder=pairwise, ignore_n=True) as srv:
            clients = {
                n: OpenAIChatClient(n, e.model_copy(update={"base_url": srv.base_url}), RunStats(), "k")
                for n, e in endpoints.items()
            }
            result = await judge_prompt(PROMPT, cfg, clients)
            for client in clients.values():
                await client.aclose()
            return result, [r for r in srv.requests if r["path"] == "/v1/chat/completions"]

    result, sent = asyncio.run(go())
    assert sides(result) == ("b q5", "s q1", "big", "small")
    counts = calls_per_prompt(cfg, endpoints=endpoints)
    assert counts["calls"] == len(sent) == 2 + 3 + 5 * 4


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"policy": {"endpoint": "big"}, "candidates": [agent("small")]}, "set one of policy"),
        ({"candidates": [agent("big", 2)], "samples": 3}, "samples: goes with policy"),
        ({"candidates": [agent("big"), agent("big")]}, "the label 'big' names two agents"),
        ({"candidates": [agent("big")]}, "a pair needs two"),
        ({"candidates": [agent("big", 2)], "pairing": "delta"}, "pairing delta needs its two agents"),
        ({"candidates": [agent("big", 2)], "pairing": {"one_side_from": "student"}}, "no candidate 'student'"),
        ({"candidates": [agent("big", 2)], "pairing": {"one_side_from": "big"}}, "needs another agent"),
        (
            {
                "candidates": [agent("big"), agent("small"), agent("mid")],
                "pairing": {"delta": {"stronger": "big", "weaker": "small"}},
            },
            "mid would be asked and never paired",
        ),  # fmt: skip
        (
            {"candidates": [agent("big"), agent("small")], "pairing": {"delta": {"stronger": "big", "weaker": "big"}}},
            "name the same agent",
        ),
        ({"candidates": [agent("big", 2) | {"name": "mixture"}]}, "is the SFT answer's"),
        ({"candidates": [agent("big", 2)], "pairing": "best"}, "is no pairing"),
    ],
)
def test_pool_configs_are_checked_with_one_line(raw, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        pref(**raw)


def test_the_short_form_is_a_pool_of_one_policy_with_its_old_seed():
    cfg = pref(policy={"endpoint": "big", "temperature": 0.7}, samples=3)
    (member,) = cfg.pool()
    assert (member.label, member.path, member.samples, member.seed_key) == ("policy", "policy", 3, "pref.policy")
    dumped = PreferenceConfig.model_validate(cfg.model_dump(mode="json"))  # a shard rebuilds it from its dump
    assert dumped.pool() == cfg.pool()
    pool = pref(candidates=[agent("big", 2), agent("small")], pairing="best_worst")
    assert PreferenceConfig.model_validate(pool.model_dump(mode="json")).pool() == pool.pool()
