"""The instruction stage in whole runs against the OpenAI test server (real HTTP on 127.0.0.1): `moaa run`
on a config with `instructions: {n: ...}` writes a version whose `prompts` config holds the kept
tasks and whose SFT rows answer exactly those; drops are named; the estimate counts the calls made; a
scheduled run makes new tasks; a run killed mid-stage asks again only what was in flight."""

from __future__ import annotations

import hashlib
import json
import signal

import pytest

from moaa.instructions.synthesis import STAGE
from moaa.testing.instruction_replies import WRITER_MARK, instruction_responder
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.estimate import estimate_run
from tests.conftest import make_config
from tests.pipeline_helpers import (
    TestServerProcess,
    answered_bodies,
    body_key,
    chat_requests,
    cli_env,
    latest_version,
    prefect_api_url,
    run_cli,
    run_main,
    start_cli,
    version_rows,
    wait_for,
    write_config,
)

REASONS = {"similar_to_seed", "similar_to_earlier", "too_short", "disagreement", "beyond_n"}


def chat_count(srv: OpenAITestServer) -> int:
    return sum(1 for r in srv.requests if r["path"] == "/v1/chat/completions")


def run_cli_in_process(tmp_path, monkeypatch, config) -> int:
    monkeypatch.chdir(tmp_path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return run_main("run", str(config_path))


def synthesizing(tmp_path, base_url: str, n: int, **prompts) -> dict:
    from tests.conftest import base_raw

    return base_raw(tmp_path, base_url) | {"prompts": {"limit": None, **prompts}, "instructions": {"n": n}}


def test_moaa_run_with_instructions_writes_their_prompts_and_answers_exactly_those(
    tmp_path, prefect_harness, monkeypatch
):
    with OpenAITestServer(responder=instruction_responder) as srv:
        assert run_cli_in_process(tmp_path, monkeypatch, synthesizing(tmp_path, srv.base_url, 8)) == 0
        calls = chat_count(srv)
    version = latest_version(tmp_path / "data")
    prompts = version_rows(version, "prompts")
    sft = version_rows(version, "sft")
    failures = version_rows(version, "failures")
    assert len(prompts) == 8
    assert sorted(r["prompt_id"] for r in sft) == sorted(r["prompt_id"] for r in prompts)
    by_id = {r["prompt_id"]: r for r in prompts}
    for row in sft:
        assert row["messages"][0] == {"role": "user", "content": by_id[row["prompt_id"]]["prompt"]}
        assert row["category"] == by_id[row["prompt_id"]]["category"]
    for row in prompts:
        assert row["seeds"] and row["agreement"] >= 0.2 and row["consensus_answer"] in row["answers"]
        assert row["writer"].startswith("writer") and row["writer_model"] == "test-model"
    dropped = [r for r in failures if r["stage"] == STAGE]
    assert dropped and {r["reason"] for r in dropped} <= REASONS
    assert "similar_to_seed" in {r["reason"] for r in dropped}  # the test writers copy an example
    manifest = json.loads((version / "moaa_manifest.json").read_text())
    made = manifest["run"]["summary"]["instructions"]
    assert made["kept"] == 8 and made["written"] == 8 + len(dropped)
    assert manifest["run"]["summary"]["calls"] == calls  # the stage's calls are counted with the others
    card = (version / "README.md").read_text()
    assert f"{made['kept']} kept of {made['written']} written in 1 batch(es)" in card and "config_name: prompts" in card
    report = (version / "report.md").read_text()
    assert f"- instructions (synthesized prompts): 1 batch(es), written {made['written']}" in report


def test_synthesized_prompts_with_ifeval_constraints_are_checked_in_the_sft_stage(
    tmp_path, prefect_harness, monkeypatch
):
    """instructions.constraint_share: the kept tasks carry an IFEval constraint as their reference, written with
    the prompts, and the SFT stage checks every answer against it (sft.verify keep: the verdict is on the row)."""
    with OpenAITestServer(responder=instruction_responder) as srv:
        config = synthesizing(tmp_path, srv.base_url, 4)
        config["instructions"]["constraint_share"] = 1.0
        config["sft"]["verify"] = "keep"
        assert run_cli_in_process(tmp_path, monkeypatch, config) == 0
    version = latest_version(tmp_path / "data")
    prompts = {r["prompt_id"]: r for r in version_rows(version, "prompts")}
    sft = version_rows(version, "sft")
    assert prompts and sorted(r["prompt_id"] for r in sft) == sorted(prompts)  # rounds end at max_rounds
    for row in sft:
        reference = json.loads(prompts[row["prompt_id"]]["reference"])
        assert len(reference["instructions"]) == 1 and json.loads(row["reference"]) == reference
        assert row["verification"]["checks"] == ["constraints"] and row["verification"]["status"] in ("pass", "fail")


def test_the_estimate_is_the_calls_made_when_every_task_passes(tmp_path, prefect_harness, monkeypatch):
    """Writers whose tasks are all new and answerers that agree: the dry run's count is exact."""

    def agreeable(request):
        last = request["messages"][-1]["content"]
        if WRITER_MARK in last:
            digest = hashlib.sha256(body_key(request).encode()).hexdigest()
            words = [digest[i : i + 6] for i in range(0, 36, 6)]
            given = "input: a short text\n" if "\ninput: " in last else ""
            return "".join(
                f"instruction: Explain {' '.join(w + str(k) for w in words)} simply.\n{given}|EoS|\n" for k in range(4)
            )
        return None if "Explain" not in last else "the same answer"

    with OpenAITestServer(responder=agreeable) as srv:
        config = synthesizing(tmp_path, srv.base_url, 10)
        estimate = estimate_run(make_config(tmp_path, srv.base_url, prompts=config["prompts"], instructions={"n": 10}))
        assert run_cli_in_process(tmp_path, monkeypatch, config) == 0
        assert chat_count(srv) == estimate["total"]["calls"] == 3 + 12 * 3 + 10 * 4
    assert estimate["stages"]["instructions"]["calls"] == 3 + 12 * 3


def test_a_scheduled_run_makes_new_instructions_and_an_unscheduled_one_is_up_to_date(
    tmp_path, prefect_harness, monkeypatch
):
    with OpenAITestServer(responder=instruction_responder) as srv:
        fixed = synthesizing(tmp_path / "fixed", srv.base_url, 4)
        (tmp_path / "fixed").mkdir()
        assert run_cli_in_process(tmp_path / "fixed", monkeypatch, fixed) == 0
        before = chat_count(srv)
        assert run_cli_in_process(tmp_path / "fixed", monkeypatch, fixed) == 0
        assert chat_count(srv) == before  # prompts.schedule all: the same batch, nothing asked
        assert not (tmp_path / "fixed" / "data" / "test-run" / "v2").exists()

        nightly = synthesizing(tmp_path / "nightly", srv.base_url, 4, schedule="next")
        (tmp_path / "nightly").mkdir()
        assert run_cli_in_process(tmp_path / "nightly", monkeypatch, nightly) == 0
        assert run_cli_in_process(tmp_path / "nightly", monkeypatch, nightly) == 0
    data = tmp_path / "nightly" / "data" / "test-run"
    first, second = version_rows(data / "v1", "prompts"), version_rows(data / "v2", "prompts")
    assert {r["batch"] for r in first} == {0} and {r["batch"] for r in second} == {0, 1}
    new = [r for r in second if r["batch"] == 1]
    assert len(new) == 4 and not {r["instruction"] for r in new} & {r["instruction"] for r in first}
    assert sorted(r["prompt_id"] for r in version_rows(data / "v2", "sft")) == sorted(r["prompt_id"] for r in second)
    batches = json.loads(
        next((tmp_path / "nightly" / "work" / "test-run").glob("instructions-*/batches.json")).read_text()
    )
    assert [b["seed"] for b in batches] == [0, 1]


def test_a_bad_instructions_config_is_one_line(tmp_path):
    from moaa.config import load_config
    from moaa.errors import ConfigError

    raw = synthesizing(tmp_path, "http://127.0.0.1:9/v1", 4, path="prompts.jsonl")
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"prompts.path/hf_dataset: with instructions on, the prompts are the synth"):
        load_config(path)


MAX_CONCURRENCY = 3


@pytest.mark.slow
def test_a_run_killed_while_synthesizing_asks_again_only_what_was_in_flight(tmp_path, prefect_harness):
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    log = tmp_path / "requests.jsonl"
    with TestServerProcess(log, "--latency-ms", "200", "--replies", "instructions") as srv:
        cfg = write_config(
            tmp_path, srv.base_url, f"endpoints.test.max_concurrency={MAX_CONCURRENCY}",
            prompts={"limit": None}, instructions={"n": 12, "per_call": 6},
        )  # fmt: skip
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        wait_for(lambda: len(answered_bodies(chat_requests(log))) >= 10, 240, "10 answered calls", proc=proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        first = len(chat_requests(log))
        assert not list((tmp_path / "data").glob("test-run/v1"))
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        requests = chat_requests(log)
    answered_before = answered_bodies(requests[:first])
    asked_again = [r for r in requests[first:] if body_key(r["body"]) in answered_before]
    # In flight (at most MAX_CONCURRENCY), and answered within the request cache's last batch (BATCH_S,
    # 50 ms: at most the wave before them): the stage has no shard journal behind its calls.
    assert len(asked_again) <= 2 * MAX_CONCURRENCY, len(asked_again)
    prompts = version_rows(latest_version(tmp_path / "data"), "prompts")
    assert len(prompts) == 12 and len({r["instruction"] for r in prompts}) == 12


def test_a_batch_that_keeps_nothing_stops_with_one_line_naming_its_drops(tmp_path):
    from moaa.errors import MoaaError
    from moaa.instructions.batches import synthesize

    with OpenAITestServer() as srv:  # its default replies hold no task
        config = make_config(tmp_path, srv.base_url, prompts={"limit": None}, instructions={"n": 2, "max_rounds": 2})
        with pytest.raises(MoaaError) as err:
            synthesize(config)
    message = str(err.value)
    assert message.startswith("instructions: no task kept in 2 rounds (dropped: unparsable 6; each named in ")
    named = message.split("each named in ")[1].split(");")[0]
    rows = [json.loads(line) for line in open(named)]
    assert [(r["reason"], r["stage"]) for r in rows] == [("unparsable", "instructions")] * 6
    assert not list(tmp_path.glob("work/test-run/instructions-*/batches.json"))  # not recorded: asked again
