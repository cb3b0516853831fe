"""sft.verify seen from a real OpenAI-compatible test server: a wrong final answer is re-asked with the
check's feedback, replaced by a passing proposal, or the prompt fails as `unverified`; never a wrong row."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from moaa.config import EndpointConfig, GenerationConfig, VerifyConfig
from moaa.engine import answer_prompt
from moaa.models.client import OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.rows import Prompt, Reference
from moaa.testing.openai_server import OpenAITestServer
from moaa.verify import Verifier
from tests.verify_helpers import Script, Tutor, python

TRIANGLE = "The angles of a triangle are in the ratio 2:3:4. What is the size of the largest angle in degrees?"
ADD = "Write a Python function add(a, b) that returns the sum."
RIGHT_ADD = python("def add(a, b):\n    return a + b")
WRONG_ADD = python("def add(a, b):\n    return a - b")


def gen(**verify: Any) -> GenerationConfig:
    return GenerationConfig.model_validate(
        {
            "method": "moa",
            "layers": 2,
            "proposers": [{"endpoint": "test", "role": f"p{i}"} for i in range(3)],
            "aggregator": {"endpoint": "test"},
            "verify": verify or {},
        }
    )


def answer(tutor: Tutor, prompt: Prompt, config: GenerationConfig, verify: bool = True):
    async def go():
        with OpenAITestServer(responder=tutor) as srv:
            endpoint = EndpointConfig(model="m", base_url=srv.base_url, max_retries=0, backoff_s=0.01)
            client = OpenAIChatClient("test", endpoint, RunStats(), api_key="k")
            try:
                verifier = Verifier(VerifyConfig()) if verify else None
                return await answer_prompt(prompt, config, {"test": client}, verifier=verifier), list(srv.requests)
            finally:
                await client.aclose()

    return asyncio.run(go())


EIGHTY = Reference(answer="80")


def triangle(reference: Reference | None = EIGHTY) -> Prompt:
    prompt = Prompt.from_messages([{"role": "user", "content": TRIANGLE}])
    prompt.reference = reference
    return prompt


def verdicts(result) -> list[dict]:
    return [json.loads(t.meta) | {"agent": t.agent} for t in result.trace if t.kind == "verification"]


def test_a_wrong_aggregate_is_re_asked_with_feedback_that_does_not_give_the_answer_away():
    tutor = Tutor(
        {TRIANGLE: Script(["9", "4", "25/3"], aggregate="The largest angle is 9 degrees.", reask="It is 80°.")}
    )
    result, requests = answer(tutor, triangle(), gen())
    assert result.failure is None
    assert result.row.messages[-1]["content"] == "It is 80°."
    assert result.row.verification == {
        "status": "pass", "reason": "final answer 80 matches the reference 80", "score": 1.0,
        "checks": ["answer"], "answer": "reask",
    }  # fmt: skip
    assert tutor.reask_feedback == [
        "Your answer above is wrong: your final answer 9 is not correct. Find the mistake, then write your whole "
        "answer to the user's last message again, corrected, addressed to the user directly."
    ]
    reask = requests[-1]["body"]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "The largest angle is 9 degrees."}
    assert [v["status"] for v in verdicts(result)] == ["fail", "pass"]
    aggregates = [(t.text, t.selected) for t in result.trace if t.kind == "aggregate"]
    assert aggregates == [("The largest angle is 9 degrees.", False), ("It is 80°.", True)]  # what became the row
    assert result.counters["verify_reasks"] == 1 and result.counters["verify_reask_pass"] == 1
    assert result.counters["verify_pass"] == 1 and "verify_fail" not in result.counters


def test_a_passing_proposal_replaces_an_aggregate_that_stays_wrong():
    script = Script(["9", "The largest angle is 80 degrees.", "25/3"], aggregate="It is 9.", reask="Still 9.")
    result, _ = answer(Tutor({TRIANGLE: script}), triangle(), gen())
    assert result.row.messages[-1]["content"] == "The largest angle is 80 degrees."
    assert result.row.verification["answer"] == "proposal"
    # the proposals' verdicts are in the trace, each under its proposer's name
    assert [(v["agent"], v["status"]) for v in verdicts(result)][2:] == [
        ("proposer0", "fail"), ("proposer1", "pass"), ("proposer2", "fail"),
    ]  # fmt: skip
    assert result.counters["verify_proposal"] == 1


def test_a_prompt_whose_answers_all_fail_is_an_unverified_failure_not_a_row():
    result, _ = answer(
        Tutor({TRIANGLE: Script(["9", "4", "25/3"], aggregate="It is 9.", reask="Still 9.")}), triangle(), gen()
    )
    assert result.row is None
    assert (result.failure.reason, result.failure.transient) == ("unverified", False)
    assert result.failure.error == (
        "the answer failed its check after a re-ask and no proposal passed: final answer 9 does not match the "
        "reference 80"
    )
    assert result.counters["verify_unverified"] == 1 and result.counters["verify_fail"] == 1


def test_failing_tests_go_back_to_the_aggregator_as_the_failing_assert():
    prompt = Prompt("p-add", [{"role": "user", "content": ADD}], reference=Reference(tests=("assert add(2, 3) == 5",)))
    tutor = Tutor({ADD: Script([WRONG_ADD] * 3, aggregate=WRONG_ADD + "It subtracts.", reask=RIGHT_ADD)})
    result, _ = answer(tutor, prompt, gen())
    assert result.row.messages[-1]["content"] == RIGHT_ADD
    assert "test 1 `assert add(2, 3) == 5`: line 1: AssertionError" in tutor.reask_feedback[0]


@pytest.mark.parametrize(
    "verify, asks, row_text, status",
    [
        ({"mode": "keep"}, 4, "It is 9.", "fail"),  # kept, its verdict recorded, nothing re-asked
        ({"mode": "off"}, 4, "It is 9.", None),
        ({"reask": False, "proposals": True}, 4, "80", "pass"),
    ],
)
def test_keep_off_and_no_reask(verify, asks, row_text, status):
    script = Script(["9", "80", "4"], aggregate="It is 9.", reask="80")
    result, requests = answer(Tutor({TRIANGLE: script}), triangle(), gen(**verify))
    assert len(requests) == asks and result.row.messages[-1]["content"] == row_text
    assert (result.row.verification or {}).get("status") == status


def test_a_prompt_without_a_reference_is_not_checked():
    result, requests = answer(Tutor({TRIANGLE: Script(["9"], aggregate="It is 9.")}), triangle(None), gen())
    assert result.row.verification is None and len(requests) == 4
    assert result.counters["verify_none"] == 1 and verdicts(result) == []
