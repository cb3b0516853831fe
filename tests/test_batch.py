"""Batch mode against the local Batch API server: the rows of an online run at the batch price,
unanswered requests asked online, and a killed run that resumes its batches without resubmitting."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from moaa.config import EndpointConfig
from moaa.models.batch import BatchChatClient
from moaa.models.client import CallError, OpenAIChatClient
from moaa.models.stats import RunStats
from moaa.testing.batch_server import BatchTestServer
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import make_config
from tests.pipeline_helpers import (
    cli_env,
    latest_version,
    prefect_api_url,
    run_cli,
    start_cli,
    version_rows,
    wait_for,
    write_config,
)

BATCH = "endpoints.test.batch={enabled: true, quiet_s: 0.3, poll_s: 0.05}"
PRICES = ("endpoints.test.price_input_per_mtok=100", "endpoints.test.price_output_per_mtok=200")


def run_pipeline(tmp_path: Path, base_url: str, *overrides: str) -> dict:
    from tests.test_pipeline import run

    tmp_path.mkdir(parents=True, exist_ok=True)
    return run(make_config(tmp_path, base_url, *PRICES, *overrides))


def sft_messages(summary: dict) -> dict[str, list]:
    return {r["prompt_id"]: r["messages"] for r in version_rows(summary["version_path"], "sft")}


def test_a_batch_run_writes_the_rows_of_the_online_run_at_the_batch_price(tmp_path, prefect_harness):
    with OpenAITestServer() as online_srv:
        online = run_pipeline(tmp_path / "online", online_srv.base_url)
    with BatchTestServer() as srv:
        batched = run_pipeline(tmp_path / "batch", srv.base_url, BATCH)
        online_asked = [r for r in srv.requests if r["path"] == "/v1/chat/completions"]
    assert sft_messages(batched) == sft_messages(online) and len(sft_messages(online)) == 4
    # 2 shards x (2 prompts x 3 proposers, then 2 aggregates): 4 batches, 16 requests, none online
    assert (srv.submitted, len(srv.batches), online_asked) == (16, 4, [])
    assert batched["endpoints"]["test"]["batched"] == 16 and online["endpoints"]["test"]["batched"] == 0
    assert online["cost"] > 0 and batched["cost"] == pytest.approx(online["cost"] * 0.5, abs=1e-6)


def batch_client(srv: BatchTestServer, folder: Path, stats: RunStats) -> BatchChatClient:
    ep = EndpointConfig(
        base_url=srv.base_url, model="test-model", max_retries=0, timeout_s=5,
        batch={"enabled": True, "quiet_s": 0.1, "poll_s": 0.05},
    )  # fmt: skip
    return BatchChatClient(OpenAIChatClient("test", ep, stats), folder)


def ask_all(client: BatchChatClient, questions: list[str]) -> list:
    async def go():
        try:
            calls = [client.chat([{"role": "user", "content": q}]) for q in questions]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_what_an_expired_batch_or_an_error_line_left_unanswered_is_asked_online(tmp_path):
    questions = [f"q{i}" for i in range(5)]
    with OpenAITestServer() as plain:
        expected = [c.text for c in ask_all(batch_client(plain, tmp_path / "x", RunStats()).inner, questions)]

    def line_status(body: dict) -> int | None:
        return {"q1": 500, "q2": 400}.get(body["messages"][-1]["content"])

    # expires before it finishes, with the first 3 of its 5 requests answered (one 500, one 400)
    with BatchTestServer(in_progress_s=5, expire_after_s=0.3, expire_done=3, line_status=line_status) as srv:
        got = ask_all(batch_client(srv, tmp_path / "shard", RunStats()), questions)
        online = [r["body"]["messages"][-1]["content"] for r in chat_requests_of(srv)]
    assert isinstance(got[2], CallError) and got[2].kind == "bad_request"  # a 400 fails as it would online
    assert [c.text for i, c in enumerate(got) if i != 2] == [t for i, t in enumerate(expected) if i != 2]
    assert sorted(online) == ["q1", "q3", "q4"]  # the 500 and the two the batch never answered


def chat_requests_of(srv: OpenAITestServer) -> list[dict]:
    return [r for r in srv.requests if r["path"] == "/v1/chat/completions"]


def test_a_batch_split_at_the_request_limit(tmp_path):
    with BatchTestServer() as srv:
        client = batch_client(srv, tmp_path, RunStats())
        client.settings = client.settings.model_copy(update={"max_requests": 2})
        got = ask_all(client, [f"q{i}" for i in range(5)])
    assert len(got) == 5 and all(c.text for c in got)
    assert sorted(len(b["lines"]) for b in srv.batches.values()) == [1, 2, 2]


@pytest.mark.slow
def test_a_run_killed_while_its_batches_are_in_flight_resumes_them_without_resubmitting(
    tmp_path, prefect_harness, monkeypatch
):
    clean = tmp_path / "clean"
    with OpenAITestServer() as online_srv:
        expected = sft_messages(run_pipeline(clean, online_srv.base_url))
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    # every batch stays in progress 4 s: long enough to kill the run while both shards' first batches wait
    with BatchTestServer(validating_s=0.5, in_progress_s=4, finalizing_s=0.5) as srv:
        cfg = write_config(tmp_path, srv.base_url, BATCH, *PRICES)
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        wait_for(lambda: len(srv.batches) >= 2, timeout=240, what="two batches in flight", proc=proc)
        assert all(b["result"] is None for b in srv.batches.values())  # none has finished yet
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        assert srv.submitted == 12 and len(list(tmp_path.glob("work/**/batches/test/state.json"))) == 2

        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    assert srv.submitted == 16 and len(srv.batches) == 4  # the 12 first-layer requests were not sent again
    assert chat_requests_of(srv) == []
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert {r["prompt_id"]: r["messages"] for r in rows} == expected


def test_progress_shows_unfinished_batches_by_state_with_counts():
    from moaa.work.progress import Progress

    stats = RunStats()
    stats.note_batch("test/a", {"endpoint": "test", "status": "validating", "total": 40})
    stats.note_batch("test/b", {"endpoint": "test", "status": "finalizing", "total": 6})
    progress = Progress("sft", 10, RunStats())
    progress.track("shard-0", stats)
    assert progress.line().endswith(" | batches: 1 validating (40 req), 1 finalizing (6 req)")
    stats.note_batch("test/a", {"endpoint": "test", "status": "completed", "total": 40})
    stats.note_batch("test/b", {"endpoint": "test", "status": "completed", "total": 6})
    assert "batches" not in progress.line()


def test_the_dry_run_prices_batch_mode_both_ways(tmp_path):
    from moaa.work.estimate import estimate_run
    from moaa.work.estimate_report import format_estimate

    est = estimate_run(make_config(tmp_path, "http://127.0.0.1:9/v1", *PRICES, "run.batch=true"))
    total = est["total"]
    assert total["cost"] > 0 and total["batch_cost"] == pytest.approx(total["cost"] * 0.5)
    assert f"~${total['cost']:.4f} online, ~${total['batch_cost']:.4f} at batch price" in format_estimate(est)
    assert estimate_run(make_config(tmp_path, "http://127.0.0.1:9/v1", *PRICES))["total"]["batch_cost"] is None


def test_batch_files_in_the_work_folder_hold_request_bodies_and_never_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MOAA_BATCH_KEY", "sk-batch-secret-123")
    with BatchTestServer(api_key="sk-batch-secret-123") as srv:
        client = batch_client(srv, tmp_path, RunStats())
        client.endpoint = client.inner.endpoint = client.endpoint.model_copy(update={"api_key_env": "MOAA_BATCH_KEY"})
        client.inner._api_key = "sk-batch-secret-123"
        got = ask_all(client, ["q0", "q1"])
    assert all(c.text for c in got) and srv.submitted == 2
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".jsonl"}
    assert all("sk-batch-secret-123" not in p.read_text() for p in files)
