"""The embedded server is supervised: a crash at start, on the first completion after a good health
check, or in the middle of a run stops everything at once with one line naming the signal or exit
code, the log's last lines and its path (a stand-in server that crashes on cue plays llama.cpp)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from moaa.errors import MoaaError
from moaa.local import server as local_server
from moaa.local.server import LocalServer
from tests.pipeline_helpers import assert_one_line_error, run_main, write_config

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
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in message and "make setup" in message
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
    monkeypatch.setenv("MOAA_FAKE_LLAMA", "segv-on-completion:4")  # probe + 2 answers, then a crash
    cfg = write_config(
        tmp_path, "http://127.0.0.1:9/v1",
        endpoints={"local": {"local": True, "model": "fake", "max_retries": 6, "backoff_s": 0.5}},
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
