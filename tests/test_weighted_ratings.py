"""Probability-weighted verdicts: the judge's own digit probabilities at each `"rating":` make a finer
score than the digit (G-Eval), so a small judge that writes "4" for every answer still ranks them;
its probability mass on "A" vs "B" makes a finer pairwise verdict than the letter (AlpacaEval 2)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import pytest

from moaa.config import AgentConfig, EndpointConfig, PreferenceConfig, ScorerConfig
from moaa.models.client import Completion, OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.preference import build_scorer, judge_prompt
from moaa.preference.candidates import Candidate, collapse
from moaa.preference.judges import PointwiseJudge
from moaa.preference.verdicts import weighted_ratings, winner_probabilities
from moaa.prompts.criteria import criterion_of
from moaa.rows import Prompt
from moaa.testing.openai_replies import Reply
from moaa.testing.openai_server import OpenAITestServer
from tests.fakes import FakeClient

PROMPT = Prompt.from_messages([{"role": "user", "content": "Which answer is better?"}])


def tokens(text: str, at_digits: dict[int, dict[str, float]]) -> list[dict]:
    """`text` as one token per character, the k-th digit token carrying `at_digits[k]` as its top
    probabilities (others certain)."""
    out, k = [], 0
    for ch in text:
        top = {ch: 0.0}
        if ch.isdigit():
            top = {t: math.log(p) for t, p in at_digits.get(k, {ch: 1.0}).items()}
            k += 1
        out.append({"token": ch, "top": top})
    return out


def test_weighted_rating_is_the_expectation_over_the_allowed_digits():
    text = '{"helpfulness": {"rationale": "ok 7 times", "rating": 4}}'
    # the digit inside the rationale is no rating; the rating's 6 is outside 1-5 and left out
    steps = tokens(text, {1: {"4": 0.6, "3": 0.2, "5": 0.1, "6": 0.1}})
    [(digit, weighted)] = weighted_ratings(steps)
    assert digit == 4 and weighted == pytest.approx((4 * 0.6 + 3 * 0.2 + 5 * 0.1) / 0.9)


def test_two_spellings_of_one_digit_add_their_probabilities():
    # llama.cpp and OpenAI list "4" and " 4" as separate tokens: both are the rating 4
    steps = tokens('{"helpfulness": {"rating": 4}}', {0: {"4": 0.4, " 4": 0.4, "3": 0.2}})
    [(digit, weighted)] = weighted_ratings(steps)
    assert digit == 4 and weighted == pytest.approx(3.8)


class LogprobClient(FakeClient):
    """A judge that writes rating 4 for every answer, less sure of it for some (by answer text)."""

    def __init__(self, confidence: dict[str, float]):
        super().__init__("judge")
        self.confidence = confidence

    async def chat(self, messages, sampling=None, *, n=1, response_format=None, tag=""):
        await super().chat(messages, sampling, n=n, response_format=response_format, tag=tag)
        answer = next(a for a in self.confidence if a in messages[-1]["content"])
        sure = self.confidence[answer]
        text = json.dumps({"helpfulness": {"rationale": "fine", "rating": 4}})
        logprobs = None
        if sampling is not None and sampling.top_logprobs:
            logprobs = tokens(text, {0: {"4": sure, "3": 1 - sure}})
        return Completion([text], ["stop"], 10, 10, 0.0, "judge", "judge-model", logprobs=logprobs)


@pytest.mark.parametrize("weighted, expected", [(True, [3.9, 3.5]), (False, [4.0, 4.0])])
def test_pointwise_judge_ranks_by_weighted_rating_only_when_asked(weighted, expected):
    client = LogprobClient({"answer one": 0.9, "answer two": 0.5})
    judge = PointwiseJudge([(AgentConfig(endpoint="judge"), client)], [criterion_of("helpfulness")], 2, weighted)
    prompt = Prompt(prompt_id="p", messages=[{"role": "user", "content": "q"}], source="t")
    candidates = [Candidate(i, text, "m") for i, text in enumerate(["answer one", "answer two"])]
    scores = asyncio.run(judge.score(prompt, candidates))
    assert [round(s.score, 4) for s in scores] == expected
    assert all((c.sampling.top_logprobs == 5) is weighted for c in client.calls)


def test_the_client_asks_for_logprobs_and_reads_them_from_a_real_server():
    from moaa.config import EndpointConfig, Sampling
    from moaa.models.client import OpenAIChatClient
    from moaa.models.stats import RunStats

    with OpenAITestServer() as srv:
        client = OpenAIChatClient("t", EndpointConfig(base_url=srv.base_url, model="m"), RunStats(), api_key="k")
        messages = [{"role": "user", "content": "hi"}]
        done = asyncio.run(client.chat(messages, Sampling(top_logprobs=3)))
        plain = asyncio.run(client.chat(messages, Sampling()))
        bodies = [r["body"] for r in srv.requests if r["path"] == "/v1/chat/completions"]
    assert (bodies[0]["logprobs"], bodies[0]["top_logprobs"]) == (True, 3)
    assert "logprobs" not in bodies[1] and plain.logprobs is None
    assert "".join(step["token"] for step in done.logprobs) == done.text
    assert all(step["token"] in step["top"] for step in done.logprobs)


# ---------------------------------------------------------------- pairwise verdicts from log-probabilities
# AlpacaEval 2's weighted win rate: each order's verdict is the probability mass on "A" vs "B", the
# pair's preference the mean over both orders; a preference within tie_threshold of 0.5 is a tie.

_SHOWN = re.compile(r"<candidate id=(A|B)>\n(.*?)\n</candidate>", re.DOTALL)


def letter_reply(written: str, mass: dict[str, float]) -> Reply:
    """A `{"winner": "<written>"}` verdict whose letter token carries `mass` as its top probabilities
    (llama.cpp spells a letter with or without a leading quote or space: both count)."""
    top = {(f" {k}" if k == "B" else k): math.log(p) for k, p in mass.items() if p}
    top = {written if k.strip() == written else k: v for k, v in top.items()}
    top = dict(sorted(top.items(), key=lambda kv: -kv[1]))
    tokens = (('{"winner": "', {'{"winner": "': 0.0}), (written, top), ('"}', {'"}': 0.0}))
    return Reply(f'{{"winner": "{written}"}}', tokens)


def first_shown_judge(sure: dict[str, float]) -> Any:
    """A position-biased judge: it writes "A" (the answer shown first) for every pair, with P(A) =
    `sure[first answer]`, the rest on B: its letters alone tie every pair (the orders disagree)."""

    def answer(req: dict) -> Reply:
        user = next(m["content"] for m in req["messages"] if m["role"] == "user")
        first = dict(_SHOWN.findall(user))["A"]
        return letter_reply("A", {"A": sure[first], "B": 1 - sure[first]})

    return answer


def test_winner_probabilities_read_the_letter_token_and_add_its_spellings():
    steps = [{"token": t, "top": {t: 0.0}} for t in ('{"rationale": "A is', ' better", ', '"winner": "')]
    steps += [{"token": "B", "top": {"B": math.log(0.5), " B": math.log(0.2), "A": math.log(0.2), "t": math.log(0.1)}}]
    written, mass = winner_probabilities(steps + [{"token": '"}', "top": {}}])
    assert written == "B" and mass == pytest.approx({"A": 0.2, "B": 0.7, "tie": 0.1})
    assert winner_probabilities(steps[:3]) is None  # no verdict token


@pytest.mark.parametrize("weighted, scores, ties", [(False, [0.5, 0.5], 1), (True, [0.65, 0.35], 0)])
def test_a_position_biased_judge_still_separates_answers_by_its_probabilities(weighted, scores, ties):
    sure = {"good q5": 0.9, "bad q1": 0.6}  # P(A) with that answer shown first
    with OpenAITestServer(responder=first_shown_judge(sure)) as srv:
        endpoint = EndpointConfig(base_url=srv.base_url, model="judge-m", max_retries=0)
        client = OpenAIChatClient("judge", endpoint, RunStats(), api_key="k")
        cfg = ScorerConfig(kind="pairwise", judges=[{"endpoint": "judge"}], rationales=False, weighted_ratings=weighted)
        got = collapse(list(sure), ["stop"] * 2, "policy").candidates
        result = asyncio.run(build_scorer(cfg, {"judge": client}).score(PROMPT, got))
        bodies = [r["body"] for r in srv.requests]
    assert [s.score for s in result] == scores
    (pair,) = result[0].details.pairs or []
    assert (pair.ab, pair.ba, pair.outcome) == ("A", "A", "tie")  # the letters disagree
    assert result[0].details.ties == ties
    if weighted:  # good: 0.9 when shown first, 1 - 0.6 when shown second
        assert (pair.orders, pair.preference, pair.weighted_outcome) == ([0.9, 0.4], 0.65, "first")
        assert result[0].details.hard_score == 0.5
    assert all(("top_logprobs" in b) is weighted for b in bodies)
    assert all('Reply with only a JSON object of the form:\n{"winner"' in b["messages"][-1]["content"] for b in bodies)


def test_a_weighted_pairwise_stage_writes_the_pair_the_letters_call_a_tie():
    sure = {"good q5": 0.9, "bad q1": 0.6}
    pref = PreferenceConfig.model_validate({
        "enabled": True, "policy": {"endpoint": "pol"}, "samples": 2, "min_margin": 0.1,
        "scorer": {"kind": "pairwise", "judges": [{"endpoint": "judge"}], "rationales": False,
                   "weighted_ratings": True},
    })  # fmt: skip
    with OpenAITestServer(responder=first_shown_judge(sure)) as srv:
        judge = OpenAIChatClient("judge", EndpointConfig(base_url=srv.base_url, model="judge-m"), RunStats(), "k")
        clients = {"pol": FakeClient("pol", responder=lambda call: list(sure)), "judge": judge}
        result = asyncio.run(judge_prompt(PROMPT, pref, clients))
    assert (result.row.chosen[0]["content"], result.row.rejected[0]["content"]) == ("good q5", "bad q1")
    assert (result.row.score_chosen, result.row.score_rejected) == (0.65, 0.35)
    counted = {k: result.counters[k] for k in ("pairs_judged", "pair_ties", "pairs_weighted", "pair_ties_weighted")}
    assert counted == {"pairs_judged": 1, "pair_ties": 1, "pairs_weighted": 1, "pair_ties_weighted": 0}
    from moaa.work.summary import quality_line

    line = quality_line({"preference": {"counters": result.counters}})  # the run summary, side by side
    assert "pairwise ties: 1 of 1 comparisons by the letters, 0 of 1 by log-probabilities" in line


def test_without_log_probabilities_the_letters_decide():
    with OpenAITestServer(responder=lambda req: '{"winner": "A"}') as srv:
        client = OpenAIChatClient("judge", EndpointConfig(base_url=srv.base_url, model="m"), RunStats(), "k")
        cfg = ScorerConfig(kind="pairwise", judges=[{"endpoint": "judge"}], weighted_ratings=True)
        got = collapse(["one q1", "two q2"], ["stop"] * 2, "policy").candidates
        result = asyncio.run(build_scorer(cfg, {"judge": client}).score(PROMPT, got))
    # the test server's default log-probabilities put all mass on the written letter: both orders say A
    assert [s.score for s in result] == [0.5, 0.5] and (result[0].details.pairs or [])[0].orders == [1.0, 0.0]


def rating_reply(confidence: float) -> Reply:
    """`{"helpfulness": {"rating": 4}}`, its digit token 4 with probability `confidence`, the rest on 3."""
    top = {"4": math.log(confidence), "3": math.log(1 - confidence)}
    steps = (('{"helpfulness": {"rating": ', {'{"helpfulness": {"rating": ': 0.0}), ("4", top), ("}}", {"}}": 0.0}))
    return Reply('{"helpfulness": {"rating": 4}}', steps)


@pytest.mark.parametrize("kind", ["pointwise", "verifier"])
def test_the_summary_counts_ties_by_the_digits_and_by_weighted_ratings_side_by_side(kind):
    """A judge that writes 4 for both answers, surer of one: a tie by the digits it wrote, a pair by its
    probabilities; the run summary's quality line prints both counts (the verifier's tie-breaker too)."""
    from moaa.work.summary import quality_line

    sure = {"good q5": 0.9, "bad q1": 0.5}

    def judge(req: dict) -> Reply:
        shown = next(a for a in sure if a in req["messages"][-1]["content"])
        return rating_reply(sure[shown])

    pref = PreferenceConfig.model_validate({
        "enabled": True, "policy": {"endpoint": "pol"}, "samples": 2, "min_margin": 0.1,
        "scorer": {"kind": kind, "judges": [{"endpoint": "judge"}], "rationales": False, "weighted_ratings": True,
                   "criteria": ["helpfulness"]},
    })  # fmt: skip
    with OpenAITestServer(responder=judge) as srv:
        client = OpenAIChatClient("judge", EndpointConfig(base_url=srv.base_url, model="judge-m"), RunStats(), "k")
        clients = {"pol": FakeClient("pol", responder=lambda call: list(sure)), "judge": client}
        result = asyncio.run(judge_prompt(PROMPT, pref, clients))  # no reference: the verifier asks its judge
    assert result.row.chosen[0]["content"] == "good q5"  # the weighted ratings separate them: 3.9 vs 3.5
    counted = {k: result.counters.get(k, 0) for k in ("judged_weighted", "ties_hard", "ties_weighted")}
    assert counted == {"judged_weighted": 1, "ties_hard": 1, "ties_weighted": 0}
    line = quality_line({"preference": {"counters": result.counters}})
    assert (
        "judge ties (best within min_margin of worst): 1 of 1 judged prompts by the digits written, 0 by weighted"
        in line
    )
