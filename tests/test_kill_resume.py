"""Crash safety: `moaa run` killed (SIGKILL) or interrupted (Ctrl-C) at several points, then run again.

The CLI runs as a subprocess against the OpenAI test server in another subprocess, whose request
log survives every kill. The replies are deterministic per request and the engine seeds every
call, so the resumed run must end with exactly the rows of a clean run, and the log shows what
each resumed run asked again: at most the calls that were in flight when it was stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from moaa.testing.openai_server import OpenAITestServer
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
    work_rows,
    write_config,
    write_prompts,
)

PROMPTS = 12
MAX_CONCURRENCY = 3


def settings(tmp_path, prompts_path) -> list[str]:
    """12 prompts in 3 shards of 4 run one after another, at most 3 calls in flight."""
    return [
        f"prompts.path={prompts_path}", "prompts.limit=null", "run.shard_size=4", "run.max_parallel_shards=1",
        f"endpoints.test.max_concurrency={MAX_CONCURRENCY}", "endpoints.test.timeout_s=30",
    ]  # fmt: skip


def clean_rows(tmp_path, prompts_path, monkeypatch) -> dict[str, list]:
    """prompt_id -> messages of an uninterrupted run (in this process, its own server and folders)."""
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    with OpenAITestServer() as srv:
        cfg = write_config(clean, srv.base_url, *settings(clean, prompts_path))
        assert run_main("run", str(cfg)) == 0
    return {r["prompt_id"]: r["messages"] for r in version_rows(latest_version(clean / "data"), "sft")}


def stop_when(proc: subprocess.Popen, sig: int, condition, what: str) -> int:
    """Send `sig` once `condition()` holds; the exit code."""
    wait_for(condition, timeout=240, what=what, proc=proc)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_killed_and_interrupted_runs_resume_to_the_rows_of_a_clean_run(tmp_path, prefect_harness, monkeypatch):
    prompts_path = write_prompts(tmp_path, PROMPTS)
    expected = clean_rows(tmp_path, prompts_path, monkeypatch)
    assert len(expected) == PROMPTS

    env = cli_env(PREFECT_API_URL=prefect_api_url())
    sft = tmp_path / "work" / "test-run"
    log = tmp_path / "requests.jsonl"
    with TestServerProcess(log, "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, prompts_path))

        def answered() -> int:
            return len(answered_bodies(chat_requests(log)))

        def shards_done() -> int:
            return len(list(sft.glob("*/sft/shard-*/DONE")))

        segments = [0]  # request-log positions where each run ended
        # 1. SIGKILL in the middle of the first shard, once its first row is on disk.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        assert stop_when(proc, signal.SIGKILL, lambda: work_rows(sft, "sft"), "a first row") == -signal.SIGKILL
        segments.append(len(chat_requests(log)))
        ids = [r["prompt_id"] for r in work_rows(sft, "sft")]
        assert len(ids) == len(set(ids)) < PROMPTS
        assert shards_done() == 0

        # 2. Ctrl-C in the middle of the second shard: a clean stop that says how to resume.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        code = stop_when(proc, signal.SIGINT, lambda: answered() >= 22, "22 answered calls")
        stderr = (tmp_path / "cli.stderr").read_text()
        assert code == 130, stderr
        assert "interrupted: finished work is kept; run the same command again to resume" in stderr
        assert "Traceback" not in stderr
        segments.append(len(chat_requests(log)))
        assert shards_done() == 1
        assert answered() < PROMPTS * 4  # it stopped instead of finishing the run

        # 3. SIGKILL once every shard is done, while the run writes its data set version.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        assert stop_when(proc, signal.SIGKILL, lambda: shards_done() == 3, "all shards done") == -signal.SIGKILL
        segments.append(len(chat_requests(log)))

        # 4. The same command finishes the run.
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        segments.append(len(chat_requests(log)))
        requests = chat_requests(log)

    assert "Traceback" not in done.stderr
    assert f"sft        rows {PROMPTS:>6}  failed    0" in done.stdout
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert sorted(r["prompt_id"] for r in rows) == sorted(expected)  # each prompt once
    assert {r["prompt_id"]: r["messages"] for r in rows} == expected
    assert sorted(r["prompt_id"] for r in work_rows(sft, "sft")) == sorted(expected)

    # Each resumed run asked again only what was in flight when the one before it stopped.
    assert len({body_key(r["body"]) for r in requests}) == PROMPTS * 4
    for start, end in zip(segments[1:-1], segments[2:], strict=True):
        answered_before = answered_bodies(requests[:start])
        asked_again = [r for r in requests[start:end] if body_key(r["body"]) in answered_before]
        assert len(asked_again) <= MAX_CONCURRENCY, (segments, start, len(asked_again))
    assert segments[-1] == segments[-2]  # every call was answered before the last kill: none left to ask


@pytest.mark.slow
def test_ctrl_c_from_a_terminal_exits_promptly(tmp_path):
    """A terminal's Ctrl-C reaches the whole job, Prefect's ephemeral API server included."""
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, write_prompts(tmp_path, PROMPTS)))
        proc = start_cli(cfg, cwd=tmp_path, env=cli_env(), new_session=True)  # its own ephemeral API
        try:
            wait_for(lambda: len(chat_requests(srv.log_path)) >= 4, timeout=300, what="4 calls", proc=proc)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "cli.stderr").read_text()
    assert code == 130, stderr
    assert stderr.rstrip().endswith("interrupted: finished work is kept; run the same command again to resume")
    assert "Traceback" not in stderr
