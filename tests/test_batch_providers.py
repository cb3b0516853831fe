"""Batch mode on Together's, Anthropic's and Gemini's Batch APIs (local servers in their documented
shapes): the rows of an online run at half its cost, unanswered requests asked online, a killed run
that resumes its batches without sending them again, and an undocumented answer named in one line."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from moaa.config import EndpointConfig
from moaa.models.batch import BatchChatClient
from moaa.models.client import CallError, OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.testing.provider_batch_servers import AnthropicBatchServer, GeminiBatchServer, TogetherBatchServer
from tests.conftest import make_config
from tests.pipeline_helpers import (
    cli_env,
    latest_version,
    run_cli,
    start_cli,
    version_rows,
    wait_for,
    write_config,
)

SERVERS = {"together": TogetherBatchServer, "anthropic": AnthropicBatchServer, "gemini": GeminiBatchServer}
PRICES = ("endpoints.test.price_input_per_mtok=100", "endpoints.test.price_output_per_mtok=200")


def online_url(provider: str, srv) -> str:
    """The OpenAI-compatible root a user names (Gemini's is /v1beta/openai; the batch API is its parent)."""
    return srv.base_url.replace("/v1", "/v1beta/openai") if provider == "gemini" else srv.base_url


def batch_setting(provider: str) -> str:
    return f"endpoints.test.batch={{enabled: true, api: {provider}, quiet_s: 0.3, poll_s: 0.05}}"


def chat_requests(srv) -> list[dict]:
    return [r for r in srv.requests if r["path"] == "/v1/chat/completions"]


def run_pipeline(tmp_path: Path, base_url: str, *overrides: str) -> dict:
    from tests.test_pipeline import run

    tmp_path.mkdir(parents=True, exist_ok=True)
    return run(make_config(tmp_path, base_url, *PRICES, *overrides))


def sft_messages(summary: dict) -> dict[str, list]:
    return {r["prompt_id"]: r["messages"] for r in version_rows(summary["version_path"], "sft")}


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_a_batch_run_writes_the_rows_of_the_online_run_at_half_the_cost(tmp_path, prefect_harness, provider):
    with SERVERS[provider]() as srv:
        online = run_pipeline(tmp_path / "online", online_url(provider, srv))
        asked_online = len(chat_requests(srv))
        batched = run_pipeline(tmp_path / "batch", online_url(provider, srv), batch_setting(provider))
        asked_after = len(chat_requests(srv))
    assert sft_messages(batched) == sft_messages(online) and len(sft_messages(online)) == 4
    # 2 shards x (2 prompts x 3 proposers, then 2 aggregates): 4 batches, 16 requests, none online
    assert (srv.submitted, len(srv.batches), asked_after - asked_online) == (16, 4, 0)
    assert batched["endpoints"]["test"]["batched"] == 16
    assert online["cost"] > 0 and batched["cost"] == pytest.approx(online["cost"] * 0.5, abs=1e-6)


def batch_client(provider: str, srv, folder: Path) -> BatchChatClient:
    ep = EndpointConfig(
        base_url=online_url(provider, srv), model="test-model", max_retries=0, timeout_s=5,
        batch={"enabled": True, "api": provider, "quiet_s": 0.1, "poll_s": 0.05},
    )  # fmt: skip
    return BatchChatClient(OpenAIChatClient("test", ep, RunStats()), folder)


def ask_all(client: BatchChatClient, questions: list[str]) -> list:
    async def go():
        try:
            return await asyncio.gather(*(client.chat([{"role": "user", "content": q}]) for q in questions),
                                        return_exceptions=True)  # fmt: skip
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_what_an_expired_batch_or_an_error_line_left_unanswered_is_asked_online(tmp_path, provider):
    questions = [f"q{i}" for i in range(5)]

    def line_status(body: dict) -> int | None:
        return {"q1": 500, "q2": 400}.get(body["messages"][-1]["content"])

    with SERVERS[provider]() as plain:
        expected = [c.text for c in ask_all(batch_client(provider, plain, tmp_path / "x").inner, questions)]
    # expires before it finishes, with the first 3 of its 5 requests answered (one 500, one 400)
    with SERVERS[provider](in_progress_s=5, expire_after_s=0.3, expire_done=3, line_status=line_status) as srv:
        got = ask_all(batch_client(provider, srv, tmp_path / "shard"), questions)
        online = [r["body"]["messages"][-1]["content"] for r in chat_requests(srv)]
    assert isinstance(got[2], CallError) and got[2].kind == "bad_request"  # a 400 fails as it would online
    assert [c.text for i, c in enumerate(got) if i != 2] == [t for i, t in enumerate(expected) if i != 2]
    assert sorted(online) == ["q1", "q3", "q4"]  # the 500 and the two the batch never answered


UNDOCUMENTED = {
    "together": ("GET /batches/{id}", {"job": {"id": "x", "status": "IN_PROGRESS"}}, "no 'status'"),
    "anthropic": ("GET /messages/batches/{id}", {"id": "x", "processing_status": "queued", "request_counts": {}},
                  "processing_status 'queued'"),
    "gemini": ("GET /batches/{id}", {"name": "batches/x", "metadata": {"state": "JOB_STATE_RUNNING"}},
               "state 'JOB_STATE_RUNNING'"),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_an_undocumented_answer_stops_the_run_with_one_line_naming_the_provider(tmp_path, provider):
    route, body, what = UNDOCUMENTED[provider]
    with SERVERS[provider](shape_fault={route: body}) as srv:
        cfg = write_config(tmp_path, online_url(provider, srv), batch_setting(provider))
        done = run_cli(cfg, cwd=tmp_path, env=cli_env())
        asked_online = chat_requests(srv)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and f"the {provider} Batch API answered GET " in errors[0] and what in errors[0], errors
    assert asked_online == []  # nothing paid twice


@pytest.mark.slow
@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_a_run_killed_while_its_batches_are_in_flight_resumes_them_without_resubmitting(tmp_path, provider):
    clean = tmp_path / "clean"
    env = cli_env()
    with SERVERS[provider]() as online_srv:
        expected = sft_messages(run_pipeline_cli(clean, online_url(provider, online_srv)))
    # every batch stays in progress 4 s: long enough to kill the run while both shards' first batches wait
    with SERVERS[provider](validating_s=0.5, in_progress_s=4, finalizing_s=0.5) as srv:
        cfg = write_config(tmp_path, online_url(provider, srv), batch_setting(provider), *PRICES)
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        wait_for(lambda: len(srv.batches) >= 2, timeout=240, what="two batches in flight", proc=proc)
        assert srv.submitted == 12 and all(b["result"] is None for b in srv.batches.values())
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        assert len(list(tmp_path.glob("work/**/batches/test/state.json"))) == 2
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    assert srv.submitted == 16 and len(srv.batches) == 4  # the 12 first-layer requests were not sent again
    assert chat_requests(srv) == []
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert {r["prompt_id"]: r["messages"] for r in rows} == expected


def run_pipeline_cli(folder: Path, base_url: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    done = run_cli(write_config(folder, base_url, *PRICES), cwd=folder, env=cli_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return {"version_path": latest_version(folder / "data")}


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_a_batch_sent_but_not_recorded_before_a_kill_is_found_again_not_sent_twice(tmp_path, provider):
    """The window between the provider creating a batch and moaa saving its id: the next run finds it
    (OpenAI/Together by input file, Gemini by display name, Anthropic by size and time, and when two
    shards sent batches of one size together, by the custom_ids in their results)."""
    import json
    import shutil

    first, second = [f"a{i}" for i in range(3)], [f"b{i}" for i in range(3)]

    def texts(srv, pairs) -> dict[str, str]:
        found = {}
        for questions, name in pairs:
            got = ask_all(batch_client(provider, srv, tmp_path / name), questions)
            assert not [g for g in got if isinstance(g, BaseException)], got
            found |= {q: c.text for q, c in zip(questions, got, strict=True)}
        return found

    with SERVERS[provider]() as srv:
        answers = texts(srv, ((first, "s0"), (second, "s1")))
        submitted = srv.submitted
        for name in ("s0", "s1"):  # as if killed before the ids were saved
            shutil.copytree(tmp_path / name, tmp_path / f"{name}-killed")
            state = tmp_path / f"{name}-killed" / "batches" / "test" / "state.json"
            saved = json.loads(state.read_text())
            for batch in saved["batches"].values():
                batch.update(id=None, status="submitting")
            state.write_text(json.dumps(saved))
        again = texts(srv, ((first, "s0-killed"), (second, "s1-killed")))
        assert (srv.submitted, chat_requests(srv)) == (submitted, [])
    assert again == answers


def test_a_batch_never_exceeds_the_providers_own_size_cap(tmp_path, monkeypatch):
    """batch.max_bytes (200 MB by default) is lowered to the provider's cap: Gemini's inlined
    requests hold 20 MB at most, so a larger round goes out as several batches."""
    from moaa.models.batch_apis import GeminiBatchAPI

    monkeypatch.setattr(GeminiBatchAPI, "max_bytes", 900)  # two requests of ~390 bytes, for the test
    with GeminiBatchServer() as srv:
        client = batch_client("gemini", srv, tmp_path)
        assert client.settings.max_bytes == 200_000_000
        got = ask_all(client, [f"question number {i} " + "x" * 200 for i in range(6)])
    assert all(c.text for c in got) and len(srv.batches) == 3 and srv.submitted == 6
