"""preference.pair_audit against a real OpenAI-compatible test server: the written pair compared head to
head, both orders, read by the letters and by log-probabilities side by side; where the rejected answer
failed its check, a judge that ranks it first is counted as preferring a wrong answer."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import pytest

from moaa.config import EndpointConfig, PreferenceConfig, VerifyConfig, parse_config
from moaa.errors import ConfigError
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.preference import calls_per_prompt, judge_prompt
from moaa.rows import Prompt, Reference
from moaa.testing.openai_replies import Reply
from moaa.testing.openai_server import OpenAITestServer
from moaa.verify import Verifier
from moaa.work.summary import quality_line
from tests.fakes import FakeClient

QUESTION = "The angles of a triangle are in the ratio 2:3:4. What is the size of the largest angle in degrees?"
RIGHT, WRONG = "The largest angle is 80 degrees.", "The largest angle is 9 degrees."
SHOWN = re.compile(r"<candidate id=(A|B)>\n(.*?)\n</candidate>", re.DOTALL)


def letter(written: str, p_a: float) -> Reply:
    """`{"winner": "<written>"}`, its letter token carrying P(A) = p_a, the rest on B."""
    top = dict(sorted({"A": math.log(p_a), "B": math.log(1 - p_a)}.items(), key=lambda kv: -kv[1]))
    return Reply(f'{{"winner": "{written}"}}', (('{"winner": "', {'{"winner": "': 0.0}), (written, top), ('"}', {})))


def judge_of(pairwise: Any) -> Any:
    """A judge endpoint: pairwise requests answered by `pairwise(first shown, second shown)`; a rating
    (the verifier's tie-breaker, a prompt without a check) 5 for the right answer, 3 for the wrong."""

    def answer(req: dict) -> Reply | str:
        text = req["messages"][-1]["content"]
        shown = dict(SHOWN.findall(text))
        if "B" in shown:
            return pairwise(shown["A"], shown["B"])
        return json.dumps({"helpfulness": {"rating": 5 if RIGHT in text else 3}})

    return answer


def audit(pairwise: Any, reference: Reference | None, answers: list[str], **scorer: Any):
    pref = PreferenceConfig.model_validate({
        "enabled": True, "policy": {"endpoint": "pol"}, "samples": len(answers), "min_margin": 0.1,
        "pair_audit": True,
        "scorer": {"kind": "verifier", "judges": [{"endpoint": "judge"}], "rationales": False,
                   "criteria": ["helpfulness"]} | scorer,
    })  # fmt: skip
    prompt = Prompt.from_messages([{"role": "user", "content": QUESTION}])
    prompt.reference = reference

    async def go():
        with OpenAITestServer(responder=judge_of(pairwise)) as srv:
            client = OpenAIChatClient("judge", EndpointConfig(base_url=srv.base_url, model="judge-m"), RunStats(), "k")
            clients = {"pol": FakeClient("pol", responder=lambda call: list(answers)), "judge": client}
            try:
                result = await judge_prompt(prompt, pref, clients, verifier=Verifier(VerifyConfig()))
            finally:
                await client.aclose()
            return result, [r["body"] for r in srv.requests]

    return asyncio.run(go())


def test_a_judge_that_prefers_the_wrong_answer_is_counted_by_letters_and_by_probabilities():
    """The check pairs the right answer (chosen) with the wrong one; the judge, asked head to head,
    names the wrong one in both orders (P = 0.8): the pair is written unchanged, and the audit counts
    a wrong answer ranked first, read both ways."""
    result, bodies = audit(lambda a, b: letter("A" if a == WRONG else "B", 0.8 if a == WRONG else 0.2),
                           Reference(answer="80"), [RIGHT, WRONG])  # fmt: skip
    assert (result.row.chosen[0]["content"], result.row.rejected[0]["content"]) == (RIGHT, WRONG)
    counted = {k: v for k, v in result.counters.items() if k.startswith("audit")}
    assert counted == {
        "audited": 1, "audit_comparisons": 1, "audit_weighted": 1, "audit_checked": 1,
        "audit_rejected_first_hard": 1, "audit_rejected_first_weighted": 1,
        "audit_wrong_first_hard": 1, "audit_wrong_first_weighted": 1,
    }  # fmt: skip
    pairwise = [b for b in bodies if "<candidate id=B>" in b["messages"][-1]["content"]]
    assert len(pairwise) == 2 and all(b.get("top_logprobs") for b in pairwise)  # both orders, log-probabilities
    (step,) = [s for s in result.trace if s.kind == "audit"]
    meta = json.loads(step.meta)
    assert meta["wrong_rejected"] is True and meta["pairs"][0]["outcome"] == "second"
    line = quality_line({"preference": {"counters": result.counters}})
    assert "pair audit (chosen vs rejected, both orders): 1 comparisons of 1 pairs; ties 0 by the letters" in line
    assert "; a wrong answer first (of 1 whose rejected side failed its check) 1 by the letters, 1 by log-prob" in line


def test_a_position_biased_judge_ties_the_pair_by_its_letters_not_by_its_probabilities():
    """Always "A" (the answer shown first), surer when the first is the better one: the letters tie
    (the orders disagree), the probabilities side with the chosen answer (0.9 and 1 - 0.6: 0.65)."""
    sure = {RIGHT: 0.9, WRONG: 0.6}
    result, _ = audit(lambda a, b: letter("A", sure[a]), None, [RIGHT, WRONG])  # judged: no check
    assert (result.row.chosen[0]["content"], result.row.rejected[0]["content"]) == (RIGHT, WRONG)
    counted = {k: v for k, v in result.counters.items() if k.startswith("audit")}
    assert counted == {"audited": 1, "audit_comparisons": 1, "audit_weighted": 1, "audit_ties_hard": 1}
    assert [s.score for s in result.trace if s.kind == "audit"] == [0.65]


def test_the_audit_needs_judges_and_the_estimate_counts_its_calls():
    base = {"enabled": True, "policy": {"endpoint": "pol"}, "samples": 3,
            "scorer": {"kind": "pointwise", "judges": [{"endpoint": "j"}, {"endpoint": "j"}]}}  # fmt: skip
    plain = calls_per_prompt(PreferenceConfig.model_validate(base))
    audited = calls_per_prompt(PreferenceConfig.model_validate(base | {"pair_audit": True}))
    assert audited["calls"] == plain["calls"] + 4  # two judges, both orders
    assert audited["agents"]["pair_audit.judges[1]"] == {"endpoint": "j", "calls": 2, "answers": 2}
    raw = {
        "name": "audit",
        "endpoints": {"pol": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}},
        "prompts": {"path": "p.jsonl"},
        "sft": {"method": "single", "proposers": [{"endpoint": "pol"}]},
        "preference": {"enabled": True, "policy": {"endpoint": "pol"}, "pair_audit": True,
                       "scorer": {"kind": "reward_model", "reward_model": "org/rm"}},
    }  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "pair_audit: needs the judges of preference.scorer.judges" in str(err.value)
