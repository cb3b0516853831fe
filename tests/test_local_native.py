"""MOAA_LLAMA_SERVER: a llama-server executable (`make native-server`) instead of the xllamacpp wheel.

A stand-in executable plays llama-server: it records its command line and serves like the fake
llama server (crashing on cue), so the wrapper's settings, supervision and errors are checked
without a 10-minute compile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from moaa.errors import MoaaError
from moaa.local import llama_runtime
from moaa.local.server import LocalServer

FAKE_BINARY = """#!{python}
import json, os, sys
from moaa.testing import fake_llama_server
args = sys.argv[1:]
open({record!r}, "w").write(json.dumps(args))
open({record!r} + ".env", "w").write(json.dumps(dict(os.environ)))
flag = lambda name: args[args.index(name) + 1]
fake_llama_server.main(["--host", flag("--host"), "--port", flag("--port"), "--model_alias", flag("--alias")])
"""


@pytest.fixture
def native(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in llama-server named by MOAA_LLAMA_SERVER; returns the file its command line goes to."""
    record = tmp_path / "argv.json"
    binary = tmp_path / "llama-server"
    binary.write_text(FAKE_BINARY.format(python=sys.executable, record=str(record)))
    binary.chmod(0o755)
    monkeypatch.setenv("MOAA_LLAMA_SERVER", str(binary))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return record


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_the_native_server_gets_the_same_settings(native, gguf, tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("MOAA_FAKE_LLAMA", raising=False)
    with LocalServer(gguf_path=gguf) as server:
        server.start(log_path=tmp_path / "server.log", startup_timeout=60, slots=3, n_threads=2)
        args = json.loads(native.read_text())
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert flags["--model"] == str(gguf) and flags["--alias"] == server.model
    assert (flags["--parallel"], flags["--ctx-size"], flags["--threads"]) == ("3", str(3 * 4096), "2")
    assert {"--no-webui", "--jinja", "--metrics"} <= set(args)
    assert llama_runtime.runtime_name() == f"llama-server (native build at {os.environ['MOAA_LLAMA_SERVER']})"


@pytest.mark.parametrize(("given", "seen"), [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
                                             ({"GOMP_SPINCOUNT": "300000"}, None)])  # fmt: skip
def test_the_server_threads_sleep_at_a_barrier_unless_the_user_chose(native, gguf, tmp_path, monkeypatch, given, seen):
    """OpenMP threads that spin at a barrier collapse decoding when another process wants the core
    (moaa.local.llama_runtime.WAIT_POLICY); the server gets PASSIVE, unless the user set how OpenMP waits."""
    import json

    monkeypatch.delenv("MOAA_FAKE_LLAMA", raising=False)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with LocalServer(gguf_path=gguf) as server:
        server.start(log_path=tmp_path / "server.log", startup_timeout=60)
        env = json.loads(Path(str(native) + ".env").read_text())
    assert env.get("OMP_WAIT_POLICY") == seen and env.get("GOMP_SPINCOUNT") == given.get("GOMP_SPINCOUNT")


def test_a_native_server_crash_reads_as_its_signal(native, gguf, tmp_path, monkeypatch):
    """The wrapper dies by the signal its llama-server died by, so supervision names it."""
    monkeypatch.setenv("MOAA_FAKE_LLAMA", "segv-on-completion:1")
    with pytest.raises(MoaaError) as caught:
        LocalServer(gguf_path=gguf).start(log_path=tmp_path / "server.log", startup_timeout=60)
    assert "was killed by SIGSEGV (signal 11) on its first completion" in str(caught.value)


def test_a_missing_native_server_is_one_line(tmp_path, gguf, monkeypatch):
    monkeypatch.setenv("MOAA_LLAMA_SERVER", str(tmp_path / "nowhere"))
    with pytest.raises(MoaaError) as caught:
        LocalServer(gguf_path=gguf).start(log_path=tmp_path / "server.log")
    assert str(caught.value) == (
        f"$MOAA_LLAMA_SERVER names {tmp_path / 'nowhere'}, which is not an executable file: build it with "
        "`make native-server`, or unset MOAA_LLAMA_SERVER to use the prebuilt server"
    )


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_the_native_server_dies_with_its_wrapper(native, gguf, tmp_path, monkeypatch):
    """PR_SET_PDEATHSIG: a SIGKILLed wrapper (moaa's child) takes its llama-server with it."""
    import signal
    import time

    monkeypatch.delenv("MOAA_FAKE_LLAMA", raising=False)
    with LocalServer(gguf_path=gguf) as server:
        server.start(log_path=tmp_path / "server.log", startup_timeout=60)
        [binary_pid] = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        assert _alive(binary_pid)
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(binary_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(binary_pid)


def test_moaa_local_threads_sets_the_servers_threads(native, gguf, tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("MOAA_FAKE_LLAMA", raising=False)
    monkeypatch.setenv("MOAA_LOCAL_THREADS", "1")
    with LocalServer(gguf_path=gguf) as server:
        server.start(log_path=tmp_path / "server.log", startup_timeout=60)
        args = json.loads(native.read_text())
    assert args[args.index("--threads") + 1] == "1" and args[args.index("--threads-batch") + 1] == "1"
    monkeypatch.setenv("MOAA_LOCAL_THREADS", "two")
    with pytest.raises(MoaaError) as caught:
        LocalServer(gguf_path=gguf).start(log_path=tmp_path / "server.log")
    assert str(caught.value) == "$MOAA_LOCAL_THREADS is 'two': set it to a number of threads (1 or more), or unset it"
