"""Tests for moaa.local.server: the embedded model behind llama.cpp's server (xllamacpp).

The slow tests start the real server once (module fixture) on 127.0.0.1 and talk to it with
the `openai` package, as the pipeline does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from moaa.config import EndpointConfig
from moaa.errors import MoaaError
from moaa.local import server as local_server
from moaa.local.model import LOCAL_MODEL_NAME, ensure_local_gguf, read_gguf_chat_template
from moaa.local.server import LocalServer, find_running_server, port_in_use
from moaa.testing.openai_server import OpenAITestServer

QUESTION = [{"role": "user", "content": "What is 2+2? Reply with just the number."}]


@pytest.fixture
def listening_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): count it as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _eventually(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_port_in_use(listening_port):
    assert port_in_use("127.0.0.1", listening_port) is True
    assert port_in_use("127.0.0.1", local_server.free_port()) is False


def test_start_on_a_taken_port_says_what_to_do(listening_port):
    with pytest.raises(MoaaError) as err:
        LocalServer().start(port=listening_port)
    assert str(err.value) == (
        f"port {listening_port} on 127.0.0.1 is already in use: choose another with --port or stop the process using it"
    )


def test_missing_runtime_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    with pytest.raises(MoaaError) as err:
        LocalServer().start()
    assert str(err.value) == (
        "xllamacpp (llama.cpp's server, prebuilt) is not installed, so the local model cannot be served: "
        "run `make setup`"
    )


def test_base_url_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError):
        LocalServer().base_url  # noqa: B018


def test_find_running_server():
    with OpenAITestServer(models=[LOCAL_MODEL_NAME]) as srv:
        assert find_running_server(srv.base_url) is True
        assert find_running_server(srv.base_url + "/", LOCAL_MODEL_NAME) is True
        assert find_running_server(srv.base_url, "another-model") is False
    port = local_server.free_port()
    assert find_running_server(f"http://127.0.0.1:{port}/v1") is False


def test_config_hint_is_a_valid_local_endpoint():
    raw = yaml.safe_load(local_server.config_hint("http://127.0.0.1:8080/v1"))
    endpoint = EndpointConfig(**raw["endpoints"]["local"])
    assert endpoint.base_urls() == ["http://127.0.0.1:8080/v1"]
    assert endpoint.model == LOCAL_MODEL_NAME


# --- the real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("local-server") / "server.log"
    with LocalServer() as srv:
        srv.start(log_path=log)
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


@pytest.mark.slow
def test_real_chat_completion(server, client):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert find_running_server(server.base_url, LOCAL_MODEL_NAME) is True
    reply = client.chat.completions.create(model=LOCAL_MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=8)
    assert [c.message.content.strip() for c in reply.choices] == ["4"]
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens >= 1


@pytest.mark.slow
def test_server_uses_the_gguf_chat_template(server, client):
    import jinja2

    # The GGUF's template adds Qwen's default system prompt; chatml or llama-2 would not.
    template = jinja2.Environment().from_string(read_gguf_chat_template(ensure_local_gguf()))
    prompt = template.render(messages=QUESTION, add_generation_prompt=True)
    root = server.base_url.removesuffix("/v1")
    assert httpx.post(root + "/apply-template", json={"messages": QUESTION}).json()["prompt"] == prompt
    tokens = httpx.post(root + "/tokenize", json={"content": prompt, "parse_special": True}).json()["tokens"]
    reply = client.chat.completions.create(model=LOCAL_MODEL_NAME, messages=QUESTION, max_tokens=1)
    assert reply.usage.prompt_tokens == len(tokens)


@pytest.mark.slow
def test_n_gives_n_choices_but_counts_one_in_usage(client):
    """Why the local endpoint keeps supports_n: false (moaa.config.endpoints): the usage of an n=3
    answer whose three choices were all cut at 6 tokens says 6 tokens, not 18."""
    reply = client.chat.completions.create(
        model=LOCAL_MODEL_NAME, messages=[{"role": "user", "content": "Write a long poem about the sea."}],
        n=3, temperature=1.0, max_tokens=6, seed=1,
    )  # fmt: skip
    assert [c.finish_reason for c in reply.choices] == ["length"] * 3
    assert reply.usage.completion_tokens == 6


@pytest.mark.slow
def test_concurrent_requests_are_decoded_together(server):
    """Four requests at once occupy four slots at once (continuous batching), and all complete."""
    from openai import AsyncOpenAI

    root = server.base_url.removesuffix("/v1")
    busy_seen = 0

    async def watch_slots(done: asyncio.Event) -> None:
        nonlocal busy_seen
        async with httpx.AsyncClient() as http:
            while not done.is_set():
                slots = (await http.get(root + "/slots")).json()
                busy_seen = max(busy_seen, sum(1 for s in slots if s.get("is_processing")))
                await asyncio.sleep(0.05)

    async def main():
        done = asyncio.Event()
        watcher = asyncio.create_task(watch_slots(done))
        async with AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as c:
            calls = [
                c.chat.completions.create(model=LOCAL_MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=8)
                for _ in range(4)
            ]
            replies = await asyncio.gather(*calls)
        done.set()
        await watcher
        return replies

    replies = asyncio.run(main())
    assert [r.choices[0].message.content.strip() for r in replies] == ["4", "4", "4", "4"]
    assert busy_seen == 4


@pytest.mark.slow
def test_second_server_on_the_same_port_is_refused(server):
    with pytest.raises(MoaaError, match=rf"^port {server.port} on 127.0.0.1 is already in use: "):
        LocalServer().start(port=server.port)


@pytest.mark.slow
def test_stop_kills_the_process_and_frees_the_port(tmp_path):
    srv = LocalServer().start(log_path=tmp_path / "server.log")
    pid, port = srv.pid, srv.port
    assert srv.is_running()
    srv.stop()
    assert not srv.is_running()
    assert not _pid_alive(pid)
    assert not port_in_use("127.0.0.1", port)
    srv.stop()  # idempotent


@pytest.mark.slow
def test_server_dies_with_its_parent(tmp_path):
    """SIGKILL the Python process that started it: the server must not outlive it."""
    code = (
        "import sys, time\n"
        "from moaa.local.server import LocalServer\n"
        f"s = LocalServer().start(log_path={str(tmp_path / 'server.log')!r})\n"
        "print(s.pid, s.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    pid = None
    try:
        pid, port = map(int, parent.stdout.readline().split())
        assert _pid_alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # The thread-group leader turns zombie a moment before its last thread (and socket) is gone.
        assert _eventually(lambda: not _pid_alive(pid) and not port_in_use("127.0.0.1", port), timeout=10)
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)  # do not leak a server if the test failed


@pytest.mark.slow
def test_serve_forever_refuses_a_port_already_serving_the_model(server):
    with pytest.raises(MoaaError, match=rf"^the local model is already served at {server.base_url}: use it"):
        local_server.serve_forever(server.port)


@pytest.mark.slow
def test_serve_forever_prints_how_to_use_it_and_stops_on_ctrl_c():
    port = local_server.free_port()
    code = f"from moaa.local.server import serve_forever; serve_forever({port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    try:
        lines = []
        while not lines or lines[-1] != "Ctrl-C to stop\n":
            lines.append(proc.stdout.readline())
            assert lines[-1], "serve_forever ended early: " + "".join(lines)
        url = f"http://127.0.0.1:{port}/v1"
        assert lines[1].startswith(f"serving {LOCAL_MODEL_NAME} at {url} (OpenAI-compatible, 4 requests at once; log: ")
        assert f"    base_url: {url}\n" in lines
        assert find_running_server(url, LOCAL_MODEL_NAME)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == "stopping\n"
        assert not port_in_use("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_moaa_client_gets_a_real_completion_and_n_separate_answers(server):
    """The pipeline's own seam against the real local model, configured as the local endpoint is:
    accounting, and n>1 as n seeded requests (supports_n: false)."""
    from moaa.config import EndpointConfig, Sampling
    from moaa.models.client import OpenAIChatClient
    from moaa.models.stats import RunStats

    stats = RunStats()
    endpoint = EndpointConfig(model=LOCAL_MODEL_NAME, base_url=server.base_url, local=True, timeout_s=300)
    client = OpenAIChatClient("local-test", endpoint, stats)

    async def ask():
        one = await client.chat(QUESTION, Sampling(temperature=0, max_tokens=8), tag="test@v1")
        two = await client.chat(QUESTION, Sampling(temperature=0.9, max_tokens=8, seed=3), n=2, tag="test@v1")
        return one, two

    one, two = asyncio.run(ask())
    assert one.text.strip() == "4" and one.finish_reasons == ["stop"]
    assert len(two.texts) == 2  # two requests (seeds 3 and 4), each counted in full
    counts = stats.endpoints["local-test"]
    assert counts.calls == 3 and counts.failures == 0 and counts.completion_tokens >= 3
    assert counts.prompt_tokens > 0 and stats.percentiles("local-test")["max"] > 0


@pytest.mark.slow
def test_setup_smoke_gets_a_real_answer_from_the_embedded_model():
    """`moaa serve --smoke`, the last step of `make setup`: one real completion, printed in one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "moaa.cli", "serve", "--smoke"], cwd=Path(__file__).parents[1],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = [li for li in proc.stdout.splitlines() if li.strip()]
    assert line.startswith(f"local model OK: {LOCAL_MODEL_NAME} answered '")
    assert "xllamacpp 2026.10.11549" in line
