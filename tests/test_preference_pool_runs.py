"""Whole runs with a preference pool: the mixture's SFT answer against the student in a pipeline run, a
run killed in its preference stage that asks again only the calls in flight, the work folder a pool
setting makes, and SFT answers read from a named version. The pool's logic per prompt is in
tests/test_preference_pool.py."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from pydantic import ValidationError

from moaa.config import dump_config, parse_config
from moaa.preference.pool import SFTAnswer
from moaa.rows import Prompt
from moaa.testing.openai_server import OpenAITestServer
from tests.test_preference_pool import CANDIDATE_RE, KEYS, pref


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
    server = ("--latency-ms", "200", "--responder", "tests.test_preference_pool_runs:rate_by_hash")
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
