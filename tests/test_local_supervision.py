"""The embedded server is supervised: a crash at start, on the first completion after a good health
check, or in the middle of a run stops everything at once with one line naming the signal or exit
code, the log's last lines and its path (a stand-in server that crashes on cue plays llama.cpp; the
last test kills the real one mid-run and resumes)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from moaa.errors import MoaaError
from moaa.local import server as local_server
from moaa.local.server import LocalServer
from tests.pipeline_helpers import (
    assert_one_line_error,
    cli_env,
    prefect_api_url,
    run_cli,
    run_main,
    start_cli,
    version_rows,
    work_rows,
    write_config,
)

FAKE = "moaa.testing.fake_llama_server"


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_crash_on_the_first_completion_fails_start_with_the_signal_and_how_to_rebuild(gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAA_FAKE_LLAMA", "segv-on-completion:1")
    server = LocalServer(gguf_path=gguf, module=FAKE)
    with pytest.raises(MoaaError) as caught:
        server.start(log_path=tmp_path / "server.log", startup_timeout=30)
    message = str(caught.value)
    assert "\n" not in message
    assert "was killed by SIGSEGV (signal 11) on its first completion, after a good health check" in message
    assert "last log lines: " in message and "general protection fault (simulated)" in message
    assert f"full log: {tmp_path / 'server.log'}" in message
    assert "needs an x86-64 CPU with AVX2, FMA and F16C" in message and "make native-server" in message
    assert not server.is_running()


def test_an_exit_while_starting_names_the_code(gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("MOAA_FAKE_LLAMA", "exit-at-start:3")
    with pytest.raises(MoaaError, match=r"exited with code 3 while starting; last log lines: .*failing at start"):
        LocalServer(gguf_path=gguf, module=FAKE).start(log_path=tmp_path / "server.log", startup_timeout=30)


def test_a_healthy_server_passes_the_completion_probe_and_is_not_reported_dead(gguf, tmp_path, monkeypatch):
    monkeypatch.delenv("MOAA_FAKE_LLAMA", raising=False)
    with LocalServer(gguf_path=gguf, module=FAKE) as server:
        server.start(log_path=tmp_path / "server.log", startup_timeout=30)
        assert "fake llama server: completion 1" in server.log_path.read_text()  # the readiness probe
        assert local_server.dead_server_message(server.base_url, grace_s=0) is None
    assert local_server.dead_server_message(server.base_url, grace_s=0) is None  # stopped on purpose


def test_a_server_dying_mid_run_stops_the_run_at_once(tmp_path, monkeypatch, prefect_harness, capsys):
    """Proposers get answers, then the server faults: the run ends with the signal, not 100 retries."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(local_server, "SERVER_MODULE", FAKE)
    monkeypatch.setattr(local_server, "ensure_local_gguf", lambda: gguf)
    # one request at a time, so the count is exact: probe + 2 answers, then a crash
    monkeypatch.setenv("MOAA_FAKE_LLAMA", "segv-on-completion:4")
    cfg = write_config(
        tmp_path, "http://127.0.0.1:9/v1",
        endpoints={"local": {"local": True, "model": "fake", "max_retries": 6, "backoff_s": 0.5, "max_concurrency": 1}},
        sft={"method": "moa", "layers": 2, "proposers": [{"endpoint": "local"}] * 3,
             "aggregator": {"endpoint": "local"}},
    )  # fmt: skip
    started = time.monotonic()
    assert run_main("run", str(cfg)) == 3
    elapsed = time.monotonic() - started
    line = assert_one_line_error((3, capsys.readouterr().err), code=3)
    assert line.startswith("error: endpoint 'local': the local model server (pid ")
    assert "was killed by SIGSEGV (signal 11) during the run" in line and "full log: " in line
    assert elapsed < 60, f"took {elapsed:.0f}s: the dead server was retried"
    log = (next((tmp_path / "work").rglob("local-server.log"))).read_text()
    assert log.count("fake llama server: completion") == 4  # nothing was asked of it after the crash
    assert not (tmp_path / "data" / "test-run").exists()  # no version from a run that died


def _server_pids(parent: int) -> list[int]:
    """Processes running the embedded llama.cpp server module that `parent` started (other runs on
    the machine may have theirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"moaa.local.llama_server" in (entry / "cmdline").read_bytes():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found += [int(entry.name)] if ppid == parent else []
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
def test_the_real_server_killed_mid_run_stops_it_in_one_line_and_the_same_command_resumes(tmp_path, prefect_harness):
    """llama.cpp's server (xllamacpp) killed by SIGSEGV after the first answers: exit 3 with one line
    naming the signal, nothing written as a version; the same command then finishes every prompt once,
    asking only the prompts that had no answer."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "What is {i} + {i}? Reply with just the number."}}\n' for i in range(6)))
    cfg = write_config(
        tmp_path, "http://127.0.0.1:9/v1", "prompts.limit=null",
        endpoints={"local": {"local": True, "model": "qwen2.5-coder-0.5b-instruct", "max_concurrency": 1,
                             "sampling": {"max_tokens": 16, "temperature": 0}}},
        prompts={"path": str(prompts)},
        sft={"method": "single", "proposers": [{"endpoint": "local"}]},
    )  # fmt: skip
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    proc = start_cli(cfg, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while len(work_rows(tmp_path / "work", "sft")) < 2:  # two prompts answered and written
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "cli.stderr").read_text()
            time.sleep(0.2)
        [pid] = _server_pids(proc.pid)  # the run's server
        os.kill(pid, signal.SIGSEGV)
        assert proc.wait(timeout=120) == 3
    finally:
        proc.kill()
    line = assert_one_line_error((3, (tmp_path / "cli.stderr").read_text()), code=3)
    assert line.startswith("error: endpoint 'local': the local model server (pid ")
    assert f"(pid {pid}) was killed by SIGSEGV (signal 11) during the run" in line and "full log: " in line
    assert not (tmp_path / "data" / "test-run").exists()
    answered = {r["prompt_id"] for r in work_rows(tmp_path / "work", "sft")}
    assert len(answered) >= 2

    done = run_cli(cfg, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = version_rows(tmp_path / "data" / "test-run" / "v1", "sft")
    assert len(rows) == 6 and len({r["prompt_id"] for r in rows}) == 6
    assert answered <= {r["prompt_id"] for r in rows}
    assert all(r["messages"][-1]["content"].strip() for r in rows)
