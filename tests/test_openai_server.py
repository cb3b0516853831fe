"""Tests for moaa.testing.openai_server, seen through the real openai client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import AsyncOpenAI

from moaa.testing.openai_replies import default_reply
from moaa.testing.openai_server import OpenAITestServer

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is the capital of France?"}]


def chat(base_url: str, api_key: str = "k", timeout: float = 5.0, **kwargs):
    """One chat completion against ``base_url`` with a fresh client (no retries)."""

    async def go():
        async with AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout) as client:
            args = {"model": "m1", "messages": MESSAGES} | kwargs
            return await client.chat.completions.create(**args)

    return asyncio.run(go())


def test_default_reply_is_deterministic_and_honours_n():
    with OpenAITestServer(filler_words=2) as srv:
        first = chat(srv.base_url, n=3, seed=7, temperature=0.5)
        again = chat(srv.base_url, n=3, seed=7, temperature=0.5)
        other_seed = chat(srv.base_url, n=1, seed=8, temperature=0.5)
    contents = [c.message.content for c in first.choices]
    assert contents == [c.message.content for c in again.choices]
    assert len(set(contents)) == 3
    req = {"model": "m1", "messages": MESSAGES, "seed": 7, "temperature": 0.5}
    assert contents == [default_reply(req, i, filler_words=2) for i in range(3)]
    assert contents[0].startswith("[m1] answer ") and "What is the capital of France?" in contents[0]
    assert len(contents[0].split()) == 3 + 6 + 2  # "[m1] answer <hex>:" + 6 prompt words + 2 fillers
    assert other_seed.choices[0].message.content != contents[0]
    assert [c.finish_reason for c in first.choices] == ["stop"] * 3
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert first.usage.prompt_tokens == 2 + 6
    assert first.usage.completion_tokens == 3 * 11
    assert first.usage.total_tokens == 8 + 33
    assert first.model == "m1"


def test_ignore_n_returns_one_choice():
    with OpenAITestServer(ignore_n=True) as srv:
        assert len(chat(srv.base_url, n=4).choices) == 1


def test_max_tokens_truncates_with_length():
    with OpenAITestServer() as srv:
        reply = chat(srv.base_url, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    words = reply.choices[0].message.content.split()
    assert len(words) == 4 and words[:2] == ["[m1]", "answer"] and words[3] == "What"
    assert reply.usage.completion_tokens == 4


@pytest.mark.parametrize(
    "answer, n, expected",
    [
        ('{"verdict": "A"}', 2, ['{"verdict": "A"}', '{"verdict": "A"}']),
        (["one", "two", "three"], 1, ["one", "two", "three"]),
        (None, 1, None),
    ],
)
def test_responder_decides_content(answer, n, expected):
    seen = []

    def responder(request):
        seen.append(request)
        return answer

    with OpenAITestServer(responder=responder) as srv:
        reply = chat(srv.base_url, n=n, response_format={"type": "json_object"})
    assert seen[0]["response_format"] == {"type": "json_object"} and seen[0]["n"] == n
    contents = [c.message.content for c in reply.choices]
    assert contents == (expected or [default_reply(seen[0], 0)])


def test_responder_error_is_a_500():
    def responder(request):
        raise RuntimeError("boom")

    with OpenAITestServer(responder=responder) as srv, pytest.raises(openai.InternalServerError, match="boom"):
        chat(srv.base_url)


def test_api_key_required_except_for_health():
    with OpenAITestServer(api_key="secret") as srv:
        with pytest.raises(openai.AuthenticationError) as err:
            chat(srv.base_url, api_key="wrong")
        assert err.value.status_code == 401
        assert err.value.body["type"] == "invalid_request_error"
        assert chat(srv.base_url, api_key="secret").choices[0].message.content.startswith("[m1]")
        with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/health") as health:
            assert json.load(health) == {"status": "ok"}
        assert [r["status"] for r in srv.requests] == [401, 200, 200]


def test_models_endpoint():
    async def go(srv):
        async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as client:
            return [m.id async for m in client.models.list()]

    with OpenAITestServer(models=["a", "b"]) as srv:
        assert asyncio.run(go(srv)) == ["a", "b"]


@pytest.mark.parametrize(
    "fault, error, status",
    [
        ("429", openai.RateLimitError, 429),
        ("500", openai.InternalServerError, 500),
        ("503", openai.InternalServerError, 503),
        ("400", openai.BadRequestError, 400),
        ("401", openai.AuthenticationError, 401),
        ("404", openai.NotFoundError, 404),
    ],
)
def test_status_faults(fault, error, status):
    with OpenAITestServer(script=[fault], retry_after_s=0.25) as srv:
        with pytest.raises(error) as err:
            chat(srv.base_url)
        assert err.value.status_code == status
        assert err.value.response.headers.get("retry-after") == ("0.25" if fault == "429" else None)
        assert chat(srv.base_url).choices[0].finish_reason == "stop"  # the script is used up: back to normal
        assert [(r["status"], r["fault"]) for r in srv.requests] == [(status, fault), (200, None)]


@pytest.mark.parametrize("fault", ["truncated", "empty"])
def test_broken_200_bodies_fail_json_decoding(fault):
    with OpenAITestServer(script=[fault]) as srv:
        with pytest.raises(json.JSONDecodeError):
            chat(srv.base_url)
        assert srv.requests[0]["status"] == 200 and srv.requests[0]["fault"] == fault


@pytest.mark.parametrize(
    "fault, content_type, opens",
    [("garbage", "text/html", b"<html>"), ("sse", "text/event-stream", b"data: {"), ("error200", "application/json",
     b'{"error": {"message": "Injected error in a 200 answer')],
)  # fmt: skip
def test_bodies_that_are_not_an_answer(fault, content_type, opens):
    import http.client
    from urllib.parse import urlsplit

    with OpenAITestServer(script=[fault]) as srv:
        url = urlsplit(srv.base_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": MESSAGES}),
                     {"Content-Type": "application/json"})  # fmt: skip
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Content-Type")) == (200, content_type)
        assert answer.read().startswith(opens)


def test_a_content_filter_fault_empties_every_choice():
    with OpenAITestServer(script=["content_filter"]) as srv:
        done = chat(srv.base_url, n=2)
    assert [(c.message.content, c.finish_reason) for c in done.choices] == [("", "content_filter")] * 2


def test_drop_is_a_connection_error():
    with OpenAITestServer(script=["drop"]) as srv:
        with pytest.raises(openai.APIConnectionError):
            chat(srv.base_url)
        assert srv.requests[0]["status"] is None


def test_hang_times_out_and_stop_is_quick():
    with OpenAITestServer(script=["hang"]) as srv:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(srv.base_url, timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2
        hung_at = time.monotonic()
    assert time.monotonic() - hung_at < 2  # stop() cancels the hanging handler


def test_refuse_then_listen_again_on_same_port():
    with OpenAITestServer() as srv:
        chat(srv.base_url)
        port = srv.port
        srv.refuse(0.3)
        with pytest.raises(openai.APIConnectionError):
            chat(srv.base_url)
        time.sleep(0.45)
        assert srv.port == port
        assert chat(srv.base_url).choices[0].finish_reason == "stop"
        assert len(srv.requests) == 2  # the refused request never arrived


def test_latency_is_applied_without_blocking():
    async def many(srv):
        async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as client:
            started = time.monotonic()
            await asyncio.gather(*(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(20)))
            return time.monotonic() - started

    with OpenAITestServer(latency_s=0.2, jitter_s=0.05) as srv:
        assert 0.2 <= asyncio.run(many(srv)) < 2.0  # 20 in a row would take >= 4 s


def test_random_faults_are_seeded():
    async def faults(seed):
        with OpenAITestServer(fault_rate=0.5, fault_mix=["500", "drop"], seed=seed) as srv:
            async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as client:
                for _ in range(12):
                    try:
                        await client.chat.completions.create(model="m", messages=MESSAGES)
                    except (openai.InternalServerError, openai.APIConnectionError):
                        pass
            return [r["fault"] for r in srv.requests]

    first = asyncio.run(faults(3))
    assert first == asyncio.run(faults(3))
    assert {None, "500", "drop"} == set(first)


def test_log_records_and_reset(tmp_path):
    log = tmp_path / "requests.jsonl"
    with OpenAITestServer(log_path=str(log), script=[None, "503"]) as srv:
        before = time.time()
        chat(srv.base_url, seed=1)
        with pytest.raises(openai.InternalServerError):
            chat(srv.base_url)
        records = list(srv.requests)
        srv.set_script(["500"])
        srv.reset()
        chat(srv.base_url)
        assert len(srv.requests) == 1 and srv.requests[0]["status"] == 200
    assert [sorted(r) for r in records] == [["body", "fault", "model", "path", "status", "t"]] * 2
    assert records[0]["body"] == {"model": "m1", "messages": MESSAGES, "seed": 1}
    assert [(r["path"], r["status"], r["fault"], r["model"]) for r in records] == [
        ("/v1/chat/completions", 200, None, "m1"),
        ("/v1/chat/completions", 503, "503", "m1"),
    ]
    assert before <= records[0]["t"] <= records[1]["t"] <= time.time()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[:2] == records and len(lines) == 3  # the file is append-only


def test_port_in_use_fails_fast_and_unknown_routes_are_404():
    with OpenAITestServer() as srv:
        with pytest.raises(OSError):
            OpenAITestServer(port=srv.port).start()
        request = urllib.request.Request(srv.base_url + "/completions", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request)
        assert err.value.code == 404
        assert json.load(err.value)["error"]["message"] == "Unknown route POST /v1/completions."


def test_unknown_fault_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        OpenAITestServer(script=["boom"])


def test_subprocess_mode_prints_ready_and_logs(tmp_path):
    log = tmp_path / "requests.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "moaa.testing.openai_server",
        "--latency-ms",
        "10",
        "--script",
        "429,none",
        "--retry-after",
        "0.5",
        "--log",
        str(log),
        "--ignore-n",
        "--api-key",
        "KEY",
    ]
    env = os.environ | {"PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            ready = proc.stdout.readline().split()
            assert ready[0] == "READY" and ready[1].startswith("http://127.0.0.1:") and ready[1].endswith("/v1")
            with pytest.raises(openai.RateLimitError) as err:
                chat(ready[1], api_key="KEY")
            assert err.value.response.headers["retry-after"] == "0.5"
            assert len(chat(ready[1], api_key="KEY", n=3).choices) == 1
            records = [json.loads(line) for line in log.read_text().splitlines()]
            assert [(r["status"], r["fault"]) for r in records] == [(429, "429"), (200, None)]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0


def test_a_reply_scripts_its_own_log_probabilities():
    from moaa.testing.openai_replies import Reply

    tokens = (('{"winner": "', {'{"winner": "': 0.0}), ("A", {"A": -0.5, "B": -1.0, "tie": -3.0}), ('"}', {'"}': 0.0}))
    with OpenAITestServer(responder=lambda req: Reply('{"winner": "A"}', tokens)) as srv:
        reply = chat(srv.base_url, logprobs=True, top_logprobs=2)
        plain = chat(srv.base_url)
    steps = reply.choices[0].logprobs.content
    assert reply.choices[0].message.content == plain.choices[0].message.content == '{"winner": "A"}'
    assert [s.token for s in steps] == ['{"winner": "', "A", '"}'] and plain.choices[0].logprobs is None
    assert [(t.token, t.logprob) for t in steps[1].top_logprobs] == [("A", -0.5), ("B", -1.0)]  # cut to 2
