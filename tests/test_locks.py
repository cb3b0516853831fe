"""Folder locks: a second holder is refused naming the first; a killed holder's lock is free at once.

Run: .venv/bin/python -m pytest tests/test_locks.py -q
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from moaa.locks import FolderBusy, FolderLock
from tests.pipeline_helpers import (
    TestServerProcess,
    assert_one_line_error,
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
)

PROMPTS = 8

HOLDER = """
import sys, time
from moaa.locks import FolderLock
FolderLock(sys.argv[1], "work folder").acquire()
print("HELD", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/work."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "work")], stdout=subprocess.PIPE,
                            text=True, env=cli_env())  # fmt: skip
    try:
        assert proc.stdout.readline() == "HELD\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_holder_is_refused_with_one_line_naming_the_first(tmp_path, holder):
    with pytest.raises(FolderBusy) as err:
        FolderLock(tmp_path / "work", "work folder").acquire(advice="wait for it")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'work'}: another moaa process is using this work folder (pid {holder.pid} ")
    assert f" on {socket.gethostname()}, started 20" in message and message.endswith("); wait for it")
    assert "\n" not in message


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = FolderLock(tmp_path / "work", "work folder")
    lock.acquire()  # no stale pid file to judge: the kernel dropped the flock with the process
    with pytest.raises(FolderBusy, match=r"\(pid \d+ on "):
        FolderLock(tmp_path / "work", "work folder").acquire()  # held again, by this process now
    lock.release()
    again = FolderLock(tmp_path / "work", "work folder")
    again.acquire()
    again.release()


def test_waiting_takes_the_lock_once_the_holder_is_gone(tmp_path, holder):
    """What an overlapping scheduled run does (flows.pipeline_flow.moaa_pipeline): wait, then go on."""
    threading.Timer(1.0, holder.kill).start()
    started = time.monotonic()
    lock = FolderLock(tmp_path / "work", "work folder")
    lock.acquire(wait=True)
    assert time.monotonic() - started >= 0.9
    lock.release()


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_give_every_prompt_exactly_once(tmp_path, prefect_harness):
    """The second run, started while the first is answering, is refused naming it; the first's
    version, and the work folder, hold each prompt once."""
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "200") as srv:
        cfg = write_config(tmp_path, srv.base_url, f"prompts.path={write_prompts(tmp_path, PROMPTS)}",
                           "prompts.limit=null", "run.shard_size=4")  # fmt: skip
        first = start_cli(cfg, cwd=tmp_path, env=env)
        wait_for(lambda: work_rows(tmp_path / "work", "sft"), timeout=240, what="a first row", proc=first)
        first.send_signal(signal.SIGSTOP)  # mid-run, however slow the second is to start
        try:
            second = run_cli(cfg, cwd=tmp_path, env=env)
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=240) == 0, (tmp_path / "cli.stderr").read_text()
    line = assert_one_line_error(second, code=2)
    assert f"another moaa process is using this work folder (pid {first.pid} on {socket.gethostname()}" in line
    assert line.endswith("wait for that run to finish (or stop it), then run the same command again to resume")
    ids = sorted(r["prompt_id"] for r in version_rows(latest_version(tmp_path / "data"), "sft"))
    assert len(ids) == len(set(ids)) == PROMPTS
    assert sorted(r["prompt_id"] for r in work_rows(tmp_path / "work", "sft")) == ids
