"""The preference stage end to end: exact outcomes per prompt, trace, call estimates, the stream
runner, the bias report, and the policy's n=K call against a server that ignores n."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from fakes import FakeCall, FakeClient

from moaa.config import EndpointConfig, PreferenceConfig
from moaa.errors import ConfigError, EndpointError
from moaa.models.agent_calls import derive_seed
from moaa.models.client import CallError, OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.preference import bias_report, calls_per_prompt, judge_prompt, run_preference_prompts
from moaa.prompts import judging as jp
from moaa.prompts.criteria import ASPECTS
from moaa.rows import Prompt
from moaa.testing.openai_server import OpenAITestServer

PROMPT = Prompt.from_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}])
CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
KEYS = [a.key for a in ASPECTS]


def verdict_for(text: str) -> str:
    """Judge replies: 'garbage' in a candidate gets an unreadable answer, else the digit after 'q'."""
    if "garbage" in text:
        return "Hmm, hard to say."
    rating = int(text.rsplit("q", 1)[1][0])
    return json.dumps({k: {"rationale": f"{k}={rating}", "rating": rating} for k in KEYS})


def judge(call: FakeCall) -> str:
    # The judge prompt is the first user message (a re-ask adds the failed answer and a correction).
    shown = dict(CANDIDATE_RE.findall(next(m["content"] for m in call.messages if m["role"] == "user")))
    if "A" in shown:  # pairwise: the higher q wins
        a, b = (int(shown[k].rsplit("q", 1)[1][0]) for k in "AB")
        return json.dumps({"rationale": "", "winner": "tie" if a == b else ("A" if a > b else "B")})
    return verdict_for(shown["1"])


def fakes(texts: list[str] | Exception) -> dict[str, FakeClient]:
    return {
        "pol": FakeClient("pol", model="policy-m", responder=lambda call: texts),
        "judge": FakeClient("judge", model="judge-m", responder=judge),
    }


def pref(**extra) -> PreferenceConfig:
    raw = {
        "enabled": True,
        "policy": {"endpoint": "pol", "temperature": 0.8},
        "samples": 5,
        "scorer": {"kind": "pointwise", "judges": [{"endpoint": "judge"}]},
        "min_margin": 0.5,
    }
    for key, value in extra.items():
        if key == "scorer":
            raw["scorer"] |= value
        else:
            raw[key] = value
    return PreferenceConfig.model_validate(raw)


LONG = "a long answer that goes on and on about many cities q5"


@pytest.mark.parametrize(
    "texts, extra, outcome",
    [
        (["Rome q2", "Paris q5", "Oslo q3", "Lima q4", "Bern q1"], {}, ("Paris q5", "Bern q1", 5.0, 1.0)),
        (["Rome q3", " Rome  q3", "Oslo q1", "", "Oslo q1"], {}, ("Rome q3", "Oslo q1", 3.0, 1.0)),
        (["Rome q3"] * 5, {}, "dropped:too_few_candidates"),
        (["Rome q3", "Oslo q3", "Bern q3"], {}, "dropped:tie"),
        (["Rome q3", "Oslo q4"], {"min_margin": 1.5}, "dropped:near_tie"),
        (["Rome q3", "Oslo q4"], {"min_margin": 1.0}, ("Oslo q4", "Rome q3", 4.0, 3.0)),
        (["Rome q4", "garbage q5", "Oslo q2"], {}, ("Rome q4", "Oslo q2", 4.0, 2.0)),
        (["garbage q4", "Oslo q2"], {}, "dropped:too_few_scored"),
        (["garbage 1 q4", "garbage 2 q2"], {}, "failed:all_unscored"),
        ([LONG, "Bern q1"], {"max_length_ratio": 3.0}, "dropped:length_ratio"),
        ([LONG, "Bern q1"], {"max_length_ratio": 8.0}, (LONG, "Bern q1", 5.0, 1.0)),
        (["", "  ", ""], {}, "failed:no_candidates"),
        (CallError("server_error", "boom"), {}, "failed:policy_failed"),
        (["Rome q2", "Paris q5", "Oslo q3"], {"scorer": {"kind": "pairwise"}}, ("Paris q5", "Rome q2", 1.0, 0.0)),
        (["Rome q3", "Paris q3"], {"scorer": {"kind": "pairwise"}}, "dropped:tie"),
    ],
)
def test_judge_prompt_outcomes(texts, extra, outcome):
    result = asyncio.run(judge_prompt(PROMPT, pref(**extra), fakes(texts)))
    if isinstance(outcome, tuple):
        assert result.failure is None and result.dropped is None
        row = result.row
        assert (row.chosen[0]["content"], row.rejected[0]["content"], row.score_chosen, row.score_rejected) == outcome
        assert row.prompt == PROMPT.messages and (row.chosen_model, row.rejected_model) == ("policy-m", "policy-m")
    else:
        status, reason = outcome.split(":")
        assert result.row is None
        if status == "dropped":
            assert result.dropped == reason and result.failure is None
        else:
            assert result.failure.reason == reason and result.failure.stage == "preference" and result.dropped is None


def test_trace_records_samples_with_scores_and_verdicts_with_rationales():
    clients = fakes(["Rome q3", " Rome  q3", "Oslo q1", "", "Bern garbage"])
    result = asyncio.run(judge_prompt(PROMPT, pref(scorer={"max_attempts": 2}), clients))
    samples = [t for t in result.trace if t.kind == "sample"]
    verdicts = [t for t in result.trace if t.kind == "verdict"]
    assert [(t.text, t.score, t.selected, json.loads(t.meta)) for t in samples] == [
        ("Rome q3", 3.0, True, {"count": 2, "samples": [0, 1], "pick": "chosen"}),
        ("Oslo q1", 1.0, True, {"count": 1, "samples": [2], "pick": "rejected"}),
        ("Bern garbage", None, False, {"count": 1, "samples": [4]}),
    ]
    assert {(t.stage, t.model, t.agent) for t in samples} == {("preference", "policy-m", "policy")}
    assert [t.score for t in verdicts] == [3.0, 1.0, None]
    meta = json.loads(verdicts[0].meta)
    assert meta["ratings"] == dict.fromkeys(KEYS, 3.0)
    assert meta["judges"][0]["rationales"]["honesty"] == "honesty=3"
    assert meta["judges"][0]["raw"] == [verdict_for("Rome q3")]
    assert "honesty: honesty=3" in verdicts[0].text
    assert json.loads(verdicts[2].meta)["judges"][0]["raw"] == ["Hmm, hard to say."] * 2
    assert result.counters == {
        "samples": 5,
        "empty_answers": 1,
        "duplicates": 1,
        "unscored": 1,
        "unparsed": 2,
        "judge_calls": 4,
    }


def test_policy_is_asked_once_for_k_samples_with_a_seed_from_the_prompt_id():
    clients = fakes(["Rome q2", "Paris q5", "Oslo q3", "Lima q4", "Bern q1"])
    asyncio.run(judge_prompt(PROMPT, pref(), clients))
    (call,) = clients["pol"].calls
    assert (call.n, call.seed, call.sampling.temperature) == (5, derive_seed(PROMPT.prompt_id, "pref.policy", 0), 0.8)
    assert call.tag == "pref.policy.sample@v1" and call.messages == PROMPT.messages
    assert {c.tag for c in clients["judge"].calls} == {"pref.judge.pointwise@v1"}


MOA = {
    "kind": "moa_judge",
    "judges": [{"endpoint": "judge"}, {"endpoint": "judge"}],
    "aggregator": {"endpoint": "judge"},
    "criteria": ["accuracy", "depth", "safety", "clarity"],
    "num_criteria": 2,
}


@pytest.mark.parametrize(
    "scorer",
    [{"kind": "pointwise"}, {"kind": "pointwise", "judges": [{"endpoint": "judge"}] * 2}, {"kind": "pairwise"}, MOA],
)
def test_calls_per_prompt_matches_the_calls_made(scorer):
    def any_judge(call: FakeCall) -> str:
        if "most relevant" in call.last_user:
            return '{"criteria": ["depth", "safety"]}'
        keys = re.findall(r"\((\w+)\): ", call.last_user)
        if "A" in dict(CANDIDATE_RE.findall(call.last_user)):
            return judge(call)
        rating = int(CANDIDATE_RE.findall(call.last_user)[0][1].rsplit("q", 1)[1][0])
        return json.dumps({k: {"rationale": "", "rating": rating} for k in keys})

    cfg = pref(scorer=scorer)
    clients = {
        "pol": FakeClient("pol", responder=lambda c: ["a q1", "b q2", "c q3", "d q4", "e q5"]),
        "judge": FakeClient("judge", responder=any_judge),
    }
    result = asyncio.run(judge_prompt(PROMPT, cfg, clients))
    assert result.row is not None
    estimate = calls_per_prompt(cfg)
    assert estimate["endpoints"] == {"pol": len(clients["pol"].calls), "judge": len(clients["judge"].calls)}
    assert estimate["calls"] == len(clients["pol"].calls) + len(clients["judge"].calls)


def test_calls_per_prompt_counts_k_policy_calls_where_n_is_ignored():
    endpoints = {"pol": EndpointConfig(local=True, model="m"), "judge": EndpointConfig(local=True, model="m")}
    estimate = calls_per_prompt(pref(scorer={"kind": "pairwise"}), endpoints=endpoints)
    assert estimate["agents"] == {
        "policy": {"endpoint": "pol", "calls": 5, "answers": 5},
        "scorer.judges[0]": {"endpoint": "judge", "calls": 20, "answers": 20},
    }


def test_run_preference_prompts_streams_every_prompt_once():
    prompts = [Prompt.from_messages([{"role": "user", "content": f"Question {i}?"}]) for i in range(7)]
    got = []
    clients = fakes(["Rome q2", "Paris q5", "Oslo q3"])
    asyncio.run(run_preference_prompts(iter(prompts), pref(), clients, on_result=got.append, max_in_flight=3))
    assert sorted(r.prompt.prompt_id for r in got) == sorted(p.prompt_id for p in prompts)
    assert all(r.row.chosen[0]["content"] == "Paris q5" for r in got)
    assert len(clients["pol"].calls) == 7


def test_endpoint_and_config_errors_stop_the_run():
    clients = fakes(["Rome q2", "Paris q5"])
    clients["judge"].responder = lambda call: EndpointError("endpoint 'judge' refused the key (HTTP 401)")
    with pytest.raises(EndpointError):
        asyncio.run(run_preference_prompts([PROMPT] * 3, pref(), clients, on_result=lambda r: None))
    with pytest.raises(ConfigError, match="preference.scorer.judges\\[0\\]: uses endpoint 'judge'"):
        asyncio.run(judge_prompt(PROMPT, pref(), {"pol": clients["pol"]}))
    with pytest.raises(ValueError, match="scorer.aggregator: kind moa_judge needs an aggregator judge"):
        pref(scorer={"kind": "moa_judge"})  # a shape rule of the config: it fails at load, before any call


def test_bias_report_exact_numbers():
    rows = [
        {
            "chosen": [{"role": "assistant", "content": "x" * 10}],
            "rejected": [{"role": "assistant", "content": "y" * 5}],
        },
        {
            "chosen": [{"role": "assistant", "content": "x" * 6}],
            "rejected": [{"role": "assistant", "content": "y" * 6}],
        },
        {
            "chosen": [{"role": "assistant", "content": "x" * 4}],
            "rejected": [{"role": "assistant", "content": "y" * 8}],
        },
    ]
    trace = [
        {"kind": "sample", "text": "a", "score": 1.0},
        {"kind": "sample", "text": "aa", "score": 2.0},
        {"kind": "sample", "text": "aaa", "score": 3.0},
        {"kind": "sample", "text": "aaaaaaa", "score": None},  # unscored: not counted
        {
            "kind": "verdict",
            "meta": json.dumps(
                {
                    "pairs": [
                        {"agree": True, "outcome": "first", "weighted_outcome": "tie"},
                        {"agree": False, "outcome": "tie", "weighted_outcome": "second"},
                        {"agree": None, "outcome": None},
                    ]
                }
            ),
        },
        {"kind": "verdict", "meta": json.dumps({"pairs": [{"agree": True, "outcome": "second"}]})},
    ]
    report = bias_report(rows, trace, {"tie": 2, "near_tie": 1, "length_ratio": 1, "too_few_candidates": 0})
    assert report == {
        "rows": 3,
        "prompts": 7,
        "length_ratio_mean": (2.0 + 1.0 + 0.5) / 3,
        "length_ratio_median": 1.0,
        "chosen_longer_share": 1 / 3,
        "score_length_pearson": 1.0,
        "scored_candidates": 3,
        "pairs_judged": 3,
        "swap_disagreements": 1,
        "swap_disagreement_rate": 1 / 3,
        "pair_tie_rate": 1 / 3,
        "weighted_tie_rate": 1 / 2,
        "dropped": {"tie": 2, "near_tie": 1, "length_ratio": 1, "too_few_candidates": 0},
        "tie_drop_share": 3 / 7,
    }
    assert bias_report([], [], {})["length_ratio_mean"] is None


def test_policy_falls_back_to_seeded_calls_on_a_server_that_ignores_n():
    def responder(req: dict) -> str:
        if req["messages"][0]["content"].startswith(jp.JUDGE_SYSTEM.text[:40]):
            return verdict_for(CANDIDATE_RE.findall(req["messages"][-1]["content"])[0][1])
        return f"City number {req['seed'] % 1000} q{req['seed'] % 5 + 1}"

    with OpenAITestServer(responder=responder, ignore_n=True) as srv:
        endpoint = EndpointConfig(base_url=srv.base_url, model="test-model", max_retries=0)
        shared = OpenAIChatClient("srv", endpoint, RunStats(), api_key="x")
        cfg = pref(policy={"endpoint": "srv", "temperature": 0.7}, scorer={"judges": [{"endpoint": "srv"}]})
        result = asyncio.run(judge_prompt(PROMPT, cfg, {"srv": shared}))
        bodies = [r["body"] for r in srv.requests if r["body"] and "temperature" in r["body"]]
    policy = [b for b in bodies if b["temperature"] == 0.7]
    base = derive_seed(PROMPT.prompt_id, "pref.policy", 0)
    assert [b.get("n") for b in policy] == [5, None, None, None, None]
    assert sorted(b["seed"] for b in policy) == [base, base + 1, base + 2, base + 3, base + 4]
    assert len([t for t in result.trace if t.kind == "sample"]) == 5
    assert result.row is not None and result.row.score_chosen == 5.0 and result.row.score_rejected == 1.0


def test_pairwise_counters_report_order_flips():
    clients = fakes(["Rome q2", "Paris q5", "Oslo q3"])
    clients["judge"].responder = lambda call: '{"rationale": "", "winner": "A"}'  # always the first shown
    result = asyncio.run(judge_prompt(PROMPT, pref(scorer={"kind": "pairwise"}), clients))
    assert result.dropped == "tie"
    assert (result.counters["pairs_judged"], result.counters["swap_disagreements"]) == (3, 3)
    assert result.counters["judge_calls"] == 6
