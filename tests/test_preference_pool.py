"""Preference pools against a real OpenAI-compatible test server serving several models by name: every
agent's samples in the recorded counts and credited to it, one-side-from pairs, delta pairs kept only
where the scorer (or verifier) agrees, the mixture's SFT answer as a candidate, and call counts equal
to the dry run's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from moaa.config import EndpointConfig, PreferenceConfig, VerifyConfig, dump_config, parse_config
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


def rate_by_writer(request: dict) -> str | None:
    """The test server's default replies, and a judge that rates the mixture's (the test model's
    aggregate) 5 and a student's answer 1-3 by its hash."""
    shown = CANDIDATE_RE.findall(request["messages"][-1]["content"])
    if not shown:
        return None
    text = shown[0][1]
    rating = 5 if text.startswith("[test-model]") else 1 + int(hashlib.sha256(text.encode()).hexdigest(), 16) % 3
    return json.dumps({k: {"rationale": "r", "rating": rating} for k in KEYS})


@pytest.mark.slow
def test_a_run_pits_the_mixtures_sft_answer_against_the_student(tmp_path, prefect_harness):
    """A whole run: the SFT stage first, then pairs of its rows' exact text vs the student's answers."""
    from flows.pipeline_flow import moaa_pipeline, task_runner_for
    from tests.conftest import base_raw
    from tests.pipeline_helpers import latest_version, version_rows

    with OpenAITestServer(responder=rate_by_writer) as srv:
        raw = base_raw(tmp_path, srv.base_url)
        raw["endpoints"]["student"] = raw["endpoints"]["test"] | {"model": "student-model"}
        raw["preference"] = {
            "enabled": True,
            "candidates": [{"endpoint": "student", "name": "student", "temperature": 1.0, "samples": 2}],
            "include_sft_answer": True,
            "pairing": {"one_side_from": "student"},
            "scorer": {"kind": "pointwise", "judges": [{"endpoint": "test", "temperature": 0.0}]},
        }
        config = parse_config(raw)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(dump_config(config)))
        summary = moaa_pipeline.with_options(task_runner=task_runner_for(config))(str(path))
    assert summary["failures"] == {}
    version = latest_version(tmp_path / "data")
    sft = {r["prompt_id"]: r["messages"][-1]["content"] for r in version_rows(version, "sft")}
    dpo = version_rows(version, "dpo")
    assert len(dpo) == len(sft) == 4
    for row in dpo:
        assert (row["chosen_agent"], row["rejected_agent"]) == ("mixture", "student")
        assert row["chosen"][0]["content"] == sft[row["prompt_id"]]  # the SFT row's exact text
        assert row["rejected_model"] == "student-model" and row["chosen_model"] == "test-model"
    card = (version / "README.md").read_text()
    assert "## Preference pool" in card and "| mixture | this run's SFT answer |" in card
    assert "one side from student" in card


def rate_by_hash(request: dict) -> str | None:
    """Default replies; a judge rating each candidate 1-5 by its text's hash (the kill test's server)."""
    shown = CANDIDATE_RE.findall(request["messages"][-1]["content"])
    if not shown:
        return None
    rating = 1 + int(hashlib.sha256(shown[0][1].encode()).hexdigest(), 16) % 5
    return json.dumps({k: {"rationale": "r", "rating": rating} for k in KEYS})


@pytest.mark.slow
def test_a_pool_run_killed_in_its_preference_stage_asks_again_only_the_calls_in_flight(tmp_path, prefect_harness):
    import signal

    from tests.pipeline_helpers import (
        TestServerProcess,
        answered_bodies,
        body_key,
        chat_requests,
        cli_env,
        latest_version,
        prefect_api_url,
        run_cli,
        start_cli,
        version_rows,
        wait_for,
        work_rows,
        write_config,
        write_prompts,
    )  # fmt: skip

    prompts, in_flight = 8, 3
    pool = {
        "enabled": True,
        "candidates": [
            {"endpoint": "test", "name": "a", "temperature": 1.0, "samples": 2},
            {"endpoint": "test", "name": "b", "temperature": 0.7, "samples": 1},
        ],
        "include_sft_answer": True,
        "pairing": {"one_side_from": "a"},
        "min_margin": 0.0,
        "scorer": {"kind": "pointwise", "judges": [{"endpoint": "test", "temperature": 0.0}]},
    }
    log, work = tmp_path / "requests.jsonl", tmp_path / "work"
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    server = ("--latency-ms", "200", "--responder", "tests.test_preference_pool:rate_by_hash")
    with TestServerProcess(log, *server) as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"prompts.path={write_prompts(tmp_path, prompts)}", "prompts.limit=null",
            "run.shard_size=4", "run.max_parallel_shards=1", f"endpoints.test.max_concurrency={in_flight}",
            preference=pool,
        )  # fmt: skip
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        wait_for(lambda: work_rows(work, "preference"), timeout=240, what="a first pair", proc=proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        killed_at = len(chat_requests(log))
        assert not list(work.glob("*/*/preference/shard-*/DONE")) or len(work_rows(work, "preference")) < prompts
        done = run_cli(cfg, cwd=tmp_path, env=env)
        requests = chat_requests(log)
    assert done.returncode == 0, done.stderr
    answered_before = answered_bodies(requests[:killed_at])
    asked_again = [r for r in requests[killed_at:] if body_key(r["body"]) in answered_before]
    assert len(asked_again) <= in_flight, asked_again
    assert len(requests) > killed_at  # the resumed run asked what the killed one had not
    # Every call of the run was asked once (as a distinct request), as many as the dry run counts.
    from moaa.config import load_config
    from moaa.work.estimate import estimate_run

    assert len({body_key(r["body"]) for r in requests}) == estimate_run(load_config(cfg))["total"]["calls"]
    version = latest_version(tmp_path / "data")
    sft = {r["prompt_id"]: r["messages"][-1]["content"] for r in version_rows(version, "sft")}
    dpo = version_rows(version, "dpo")
    assert len({r["prompt_id"] for r in dpo}) == len(dpo) > 0  # each prompt once
    for row in dpo:
        assert "a" in (row["chosen_agent"], row["rejected_agent"])
        for side in ("chosen", "rejected"):
            if row[f"{side}_agent"] == "mixture":
                assert row[side][0]["content"] == sft[row["prompt_id"]]


def test_a_pool_setting_makes_a_new_work_folder_and_the_defaults_keep_the_old_one(tmp_path):
    from moaa.work.run_plan import _POOL_DEFAULTS, fingerprint
    from tests.conftest import make_config

    short = {"enabled": True, "policy": {"endpoint": "test"}, "scorer": {"judges": [{"endpoint": "test"}]}}
    base = make_config(tmp_path, "http://127.0.0.1:9/v1", preference=short)
    assert set(_POOL_DEFAULTS) == {"candidates", "include_sft_answer", "pairing"}
    assert {k: v for k, v in dump_config(base)["preference"].items() if k in _POOL_DEFAULTS} == _POOL_DEFAULTS
    others = [
        short | {"include_sft_answer": True},
        short | {"policy": None, "candidates": [{"endpoint": "test", "samples": 5}]},
        short | {"include_sft_answer": True, "pairing": {"one_side_from": "mixture"}},
    ]
    prints = {fingerprint(make_config(tmp_path, "http://127.0.0.1:9/v1", preference=p), "x") for p in others}
    assert len(prints | {fingerprint(base, "x")}) == 4


def test_include_sft_answer_reads_a_named_versions_sft_rows(tmp_path):
    from moaa.errors import InputError
    from moaa.work.sft_answers import read_sft_answers
    from tests.conftest import make_config
    from tests.version_helpers import write_demo, write_parts

    write_demo(tmp_path / "data", write_parts(tmp_path / "parts", n=6))
    short = {"enabled": True, "policy": {"endpoint": "test"}, "scorer": {"judges": [{"endpoint": "test"}]}}
    config = make_config(tmp_path, "http://127.0.0.1:9/v1", preference=short | {"include_sft_answer": "demo@v1"})
    asked = [Prompt("p001", [{"role": "user", "content": "Question 1?"}]), Prompt("p004", []), Prompt("gone", [])]
    found = read_sft_answers(config, tmp_path / "work" / "preference" / "shard-00000", asked)
    # The demo version's recorded config names no aggregator: the model column names the version.
    assert found == {"p001": SFTAnswer("word word ", "demo@v1"), "p004": SFTAnswer("word " * 5, "demo@v1")}
    missing = make_config(tmp_path, "http://127.0.0.1:9/v1", preference=short | {"include_sft_answer": "demo@v9"})
    with pytest.raises(InputError, match="demo@v9 does not exist"):
        read_sft_answers(missing, tmp_path / "work" / "preference" / "shard-00000", asked)
    with pytest.raises(ValidationError, match="a pinned version NAME@vN"):
        pref(policy={"endpoint": "big"}, include_sft_answer="demo")
