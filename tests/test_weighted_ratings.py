"""Probability-weighted ratings (G-Eval): the judge's own digit probabilities at each `"rating":` make
a finer score than the digit, so a small judge that writes "4" for every answer still ranks them."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from moaa.config import AgentConfig
from moaa.models.client import Completion
from moaa.preference.candidates import Candidate
from moaa.preference.judges import PointwiseJudge
from moaa.preference.verdicts import weighted_ratings
from moaa.prompts import judging as jp
from moaa.rows import Prompt
from moaa.testing.openai_server import OpenAITestServer
from tests.fakes import FakeClient


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
    judge = PointwiseJudge([(AgentConfig(endpoint="judge"), client)], [jp.criterion_of("helpfulness")], 2, weighted)
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
