"""The HTTP seam against a real OpenAI-compatible server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest

from moaa.config import EndpointConfig, Sampling
from moaa.errors import EndpointError
from moaa.models.client import CallError, OpenAIChatClient
from moaa.models.limits import EndpointLimiter
from moaa.models.stats import RunStats
from moaa.testing.openai_server import OpenAITestServer

MESSAGES = [{"role": "user", "content": "Say hello"}]
_names = itertools.count()


def make_client(base_url, stats=None, **endpoint) -> OpenAIChatClient:
    cfg = EndpointConfig(
        model="test-model",
        base_url=base_url,
        **({"max_retries": 4, "backoff_s": 0.01, "timeout_s": 2.0} | endpoint),
    )
    # a fresh name per client: limiters and n-support are shared per endpoint within a process
    return OpenAIChatClient(f"ep{next(_names)}", cfg, stats or RunStats())


@pytest.mark.parametrize("fault", ["429", "500", "503", "hang", "truncated", "empty", "drop", "garbage"])
def test_each_fault_is_retried_to_success(fault):
    with OpenAITestServer(retry_after_s=0.05, hang_s=30) as srv:
        srv.set_script([fault, fault])
        client = make_client(srv.base_url, timeout_s=0.5)
        completion = asyncio.run(client.chat(MESSAGES, tag="t"))
        assert completion.text.startswith("[test-model] answer")
        assert [r["fault"] for r in srv.requests if r["path"].endswith("completions")] == [fault, fault, None]
        counts = client.stats.endpoints[client.name]
        assert (counts.calls, counts.retries, counts.requests, counts.failures) == (1, 2, 3, 0)
        assert counts.rate_limited == (2 if fault == "429" else 0)


def test_retry_after_is_honoured():
    with OpenAITestServer(retry_after_s=0.6) as srv:
        srv.set_script(["429"])
        start = time.monotonic()
        asyncio.run(make_client(srv.base_url).chat(MESSAGES))
        times = [r["t"] for r in srv.requests]
        assert times[1] - times[0] >= 0.55 and time.monotonic() - start >= 0.55


def test_a_long_retry_after_is_capped_and_shown_while_it_waits(caplog):
    """Retry-After: 3600 once hung a run without a word; now it waits max_retry_after_s, and the
    progress line names the wait while it lasts."""
    from moaa.work.progress import Progress

    stats = RunStats()
    with OpenAITestServer(retry_after_s=3600) as srv:
        srv.set_script(["429"])
        client = make_client(srv.base_url, stats, max_retry_after_s=2.5)
        progress = Progress("sft", 4, stats)

        async def chat_and_watch() -> tuple[str, str]:
            call = asyncio.ensure_future(client.chat(MESSAGES))
            await asyncio.sleep(0.5)
            line = progress.line()
            done = await asyncio.wait_for(call, timeout=10)  # not an hour
            return line, done.text

        start = time.monotonic()
        line, text = asyncio.run(chat_and_watch())
        assert 2.0 <= time.monotonic() - start < 10 and text.startswith("[test-model] answer")
    assert re.search(
        rf"\| waiting [123] s for endpoint {client.name} \(HTTP 429, Retry-After 3600 s, capped at 2.5 s\)$", line
    ), line
    assert progress.wait_text() == ""  # over once the retry went out
    assert f"endpoint {client.name} answered HTTP 429 with Retry-After 3600 s; waiting 2.5 s instead" in caplog.text


def test_refused_connection_is_retried_until_server_listens_again():
    with OpenAITestServer() as srv:
        srv.refuse(0.4)
        completion = asyncio.run(make_client(srv.base_url, backoff_s=0.1, max_retries=6).chat(MESSAGES))
        assert completion.texts and len(srv.requests) == 1


def test_retry_budget_exhausted_raises_call_error():
    with OpenAITestServer() as srv:
        srv.set_script(["500"] * 10)
        client = make_client(srv.base_url, max_retries=2)
        with pytest.raises(CallError, match="server_error.*HTTP 500") as err:
            asyncio.run(client.chat(MESSAGES))
        assert err.value.kind == "server_error" and len(srv.requests) == 3
        assert client.stats.endpoints[client.name].failures == 1


@pytest.mark.parametrize(
    "fault, message",
    [
        ("garbage", "malformed response: HTTP 200 with an HTML page, not JSON ('<html><body>502 Bad Gateway (injected "
                    "garbage)</body></html>'): is base_url the API (ending in /v1), not a web page, a proxy or a login "
                    "page?"),
        ("sse", "malformed response: HTTP 200 with a server-sent event stream (text/event-stream) though no stream "
                "was asked for: the server streams every answer; use its OpenAI-compatible non-streaming API"),
        ("error200", "malformed response: HTTP 200 with an error instead of an answer: Injected error in a 200 "
                     "answer: the model is overloaded."),
        ("empty", "malformed response: HTTP 200 with an empty body"),
        ("truncated", r"malformed response: HTTP 200 with JSON cut short after \d+ bytes \(the answer was cut "
                      r"mid-way\)"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_an_answer_is_named(fault, message):
    """HTML and an unrequested SSE stream both ended as 'malformed response: Expecting value', and a 200
    holding {"error": ...} dropped the server's own message."""
    with OpenAITestServer() as srv:
        srv.set_script([fault] * 3)
        with pytest.raises(CallError) as err:
            asyncio.run(make_client(srv.base_url, max_retries=2).chat(MESSAGES))
    assert err.value.kind == "malformed"
    expected = message if fault == "truncated" else re.escape(message)
    assert re.fullmatch(rf"malformed: endpoint 'ep\d+' \(test-model\): {expected}", str(err.value)), str(err.value)


def test_a_content_filter_is_not_asked_again():
    """finish_reason content_filter was retried as a transient empty answer, then recorded as one."""
    with OpenAITestServer() as srv:
        srv.set_script(["content_filter"])
        client = make_client(srv.base_url)
        done = asyncio.run(client.chat(MESSAGES))
        assert done.finish_reasons == ["content_filter"] and len(srv.requests) == 1


def test_401_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MOAA_TEST_KEY", "wrong-key")
    with OpenAITestServer(api_key="right-key") as srv:
        client = make_client(srv.base_url, api_key_env="MOAA_TEST_KEY")
        with pytest.raises(EndpointError) as err:
            asyncio.run(client.chat(MESSAGES))
        assert "refused the key (HTTP 401)" in str(err.value) and "$MOAA_TEST_KEY" in str(err.value)
        assert "wrong-key" not in str(err.value)
        assert len(srv.requests) == 1  # no retry


def test_the_key_from_the_variable_is_sent_as_a_bearer_token(monkeypatch):
    monkeypatch.setenv("MOAA_TEST_KEY", "right-key")
    with OpenAITestServer(api_key="right-key") as srv:
        done = asyncio.run(make_client(srv.base_url, api_key_env="MOAA_TEST_KEY").chat(MESSAGES))
        assert done.text and len(srv.requests) == 1


@pytest.mark.parametrize("fault, error", [("404", EndpointError), ("400", CallError)])
def test_no_retry_on_4xx(fault, error):
    with OpenAITestServer() as srv:
        srv.set_script([fault])
        with pytest.raises(error):
            asyncio.run(make_client(srv.base_url).chat(MESSAGES))
        assert len(srv.requests) == 1


def test_requests_per_minute_limit_seen_by_server():
    rpm = 300  # 5 per second, bucket of one second's worth
    with OpenAITestServer() as srv:
        client = make_client(srv.base_url, requests_per_minute=rpm, max_concurrency=16)

        async def burst():
            await client.chat(MESSAGES)  # warm up: imports and the first connection
            await asyncio.sleep(1.0)  # let the bucket refill
            srv.reset()
            await asyncio.gather(*(client.chat(MESSAGES) for _ in range(15)))

        asyncio.run(burst())
        times = sorted(r["t"] for r in srv.requests)
        assert len(times) == 15
        # 15 requests at 5/s with a burst of 5: the last cannot come before ~2 s.
        assert times[-1] - times[0] >= 1.5  # 2.0 s at the client; arrivals of the first burst may lag
        for i, t in enumerate(times):  # no window of W seconds holds more than burst + rate * W
            assert sum(1 for u in times[i:] if u - t < 1.0) <= 10


def test_n_is_passed_through_when_honoured():
    with OpenAITestServer() as srv:
        client = make_client(srv.base_url)
        completion = asyncio.run(client.chat(MESSAGES, Sampling(temperature=0.7, seed=5), n=3))
        assert len(completion.texts) == 3 and len(set(completion.texts)) == 3
        assert [r["body"]["n"] for r in srv.requests] == [3]


def test_ignored_n_falls_back_to_seeded_separate_calls():
    with OpenAITestServer(ignore_n=True) as srv:
        client = make_client(srv.base_url)
        completion = asyncio.run(client.chat(MESSAGES, Sampling(temperature=0.7, seed=10), n=3))
        assert len(completion.texts) == 3 and len(set(completion.texts)) == 3
        bodies = [r["body"] for r in srv.requests]
        assert bodies[0]["n"] == 3 and sorted(b["seed"] for b in bodies[1:]) == [11, 12]
        srv.reset()
        asyncio.run(client.chat(MESSAGES, Sampling(seed=0), n=2))  # now known: no n at all
        assert sorted(r["body"]["seed"] for r in srv.requests) == [0, 1]
        assert all("n" not in r["body"] for r in srv.requests)


def test_truncation_and_accounting():
    with OpenAITestServer(filler_words=50) as srv:
        stats = RunStats()
        client = make_client(srv.base_url, stats, price_input_per_mtok=1_000_000.0, price_output_per_mtok=2_000_000.0)
        completion = asyncio.run(client.chat(MESSAGES, Sampling(max_tokens=5), tag="sft.aggregate@v1"))
        assert completion.finish_reasons == ["length"] and len(completion.text.split()) == 5
        ep = stats.endpoints[client.name]
        assert (ep.truncated, ep.prompt_tokens, ep.completion_tokens) == (1, 2, 5)
        assert ep.cost == pytest.approx(2 * 1.0 + 5 * 2.0)
        assert stats.tags[f"sft.aggregate@v1|{client.name}"].calls == 1
        assert set(stats.percentiles(client.name)) == {"p50", "p90", "p99", "max"}


def test_replicas_are_balanced():
    with OpenAITestServer(latency_s=0.05) as a, OpenAITestServer(latency_s=0.05) as b:
        client = make_client([a.base_url, b.base_url], max_concurrency=8)

        async def many():
            await asyncio.gather(*(client.chat(MESSAGES) for _ in range(16)))

        asyncio.run(many())
        assert len(a.requests) == len(b.requests) == 8


def test_adaptive_concurrency_halves_on_429_and_recovers():
    limiter = EndpointLimiter(max_concurrency=8, recover_after=2)
    limiter.on_rate_limited(None)
    assert limiter.limit == 4
    limiter.on_rate_limited(None)
    assert limiter.limit == 2
    for _ in range(4):
        limiter.on_success()
    assert limiter.limit == 4


def test_a_gate_is_awaited_before_each_admission_until_it_is_removed():
    """EndpointLimiter.set_gate: the public hook flows/rate_limits.py puts a Prefect rate limit in with."""
    limiter = EndpointLimiter(max_concurrency=1)
    seen: list[int] = []

    async def gate() -> None:
        seen.append(limiter.in_flight)  # awaited before the request takes its slot

    async def requests(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()
            limiter.release()

    limiter.set_gate(gate)
    asyncio.run(requests(3))
    limiter.set_gate(None)
    asyncio.run(requests(2))
    assert seen == [0, 0, 0] and limiter.in_flight == 0


def test_concurrency_bound_holds_across_threads():
    """One limiter shared by shards running on different threads and event loops."""
    import threading

    limiter = EndpointLimiter(max_concurrency=3)
    peak = [0]
    lock = threading.Lock()

    async def work():
        await limiter.acquire()
        with lock:
            peak[0] = max(peak[0], limiter.in_flight)
        await asyncio.sleep(0.01)
        limiter.release()

    def shard():
        async def run():
            await asyncio.gather(*(work() for _ in range(20)))

        asyncio.run(run())

    threads = [threading.Thread(target=shard) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == 3 and limiter.in_flight == 0


def test_clients_of_one_endpoint_share_one_pool_per_loop_until_the_last_closes():
    """Shards build their own clients; on the process's one loop they share one connection pool."""
    with OpenAITestServer() as srv:
        cfg = EndpointConfig(model="test-model", base_url=srv.base_url, timeout_s=2.0)
        first, second = (OpenAIChatClient("shared-pool", cfg, RunStats(), api_key="k") for _ in range(2))
        other_key = OpenAIChatClient("shared-pool", cfg, RunStats(), api_key="other")

        async def go() -> None:
            await asyncio.gather(first.chat(MESSAGES), second.chat(MESSAGES), other_key.chat(MESSAGES))
            pool = first._clients()[0]
            assert second._clients()[0] is pool
            assert other_key._clients()[0] is not pool  # another key, another pool (its own headers)
            await first.aclose()
            assert pool._session is not None  # still held by the second client
            await second.chat(MESSAGES)
            await second.aclose()
            assert pool._session is None  # the last reference closed it
            await other_key.aclose()

        asyncio.run(go())
        loops = [asyncio.new_event_loop() for _ in range(2)]
        pools = [loop.run_until_complete(_pool_of(first)) for loop in loops]
        assert pools[0] is not pools[1]  # an aiohttp session belongs to one loop
        for loop in loops:
            loop.run_until_complete(first.aclose())
            loop.close()


async def _pool_of(client: OpenAIChatClient):
    return client._clients()[0]
