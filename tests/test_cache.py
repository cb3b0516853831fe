"""The request cache: keys from what decides an answer, durable across processes, and what a
changed config re-asks (nothing, only the judge, or a proposer and what reads its answer)."""

from __future__ import annotations

import asyncio
import json

import pytest

from moaa.config import Sampling
from moaa.errors import MoaaError
from moaa.models.cache import CachedClient, RequestCache, request_key
from moaa.models.client import Completion
from moaa.models.stats import RunStats
from moaa.testing.openai_server import OpenAITestServer
from tests.fakes import FakeClient
from tests.pipeline_helpers import (
    is_judge_request,
    run_main,
    verdict_responder,
    write_config,
    write_prompts,
)

MESSAGES = [{"role": "user", "content": "Say hello"}]
BASE = dict(model="m", messages=MESSAGES, params=Sampling(temperature=0.7, seed=1), n=1, fmt=None, tag="sft.a@v1")


@pytest.mark.parametrize(
    "change",
    [
        {"model": "m2"},
        {"messages": [{"role": "user", "content": "Say hello!"}]},
        {"params": Sampling(temperature=0.8, seed=1)},
        {"params": Sampling(temperature=0.7, seed=2)},
        {"params": Sampling(temperature=0.7, seed=1, max_tokens=10)},
        {"n": 2},
        {"fmt": {"type": "json_object"}},
        {"tag": "sft.a@v2"},  # a new prompt template version
    ],
)
def test_key_follows_everything_that_decides_an_answer(change):
    assert request_key(**BASE) == request_key(**BASE)
    assert request_key(**(BASE | change)) != request_key(**BASE)


def test_answers_survive_a_new_process_and_a_second_connection(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    RequestCache(path).put("k", {"texts": ["hi"]})
    assert RequestCache(path).get("k") == {"texts": ["hi"]}  # another connection reads the committed row
    assert RequestCache(path).get("other") is None
    assert len(RequestCache(path)) == 1


def test_answers_are_readable_at_once_and_committed_whole_by_flush(tmp_path, monkeypatch):
    """`put` returns before SQLite sees the row (the writer thread commits it in batches); reads look
    at the pending rows first, and flush() leaves every row committed."""
    import sqlite3

    from moaa.models import cache as cache_module

    monkeypatch.setattr(cache_module, "BATCH_S", 30.0)  # no commit by age during the test
    path = tmp_path / "cache.sqlite"
    cache = RequestCache(path)
    for i in range(3):
        cache.put(f"k{i}", {"texts": [f"answer {i}"]})

    def committed() -> dict[str, str]:
        with sqlite3.connect(path) as conn:  # another connection, as another process would read
            return dict(conn.execute("SELECT key, value FROM answers").fetchall())

    assert committed() == {}  # not yet in the file: a crash now loses these three, nothing else
    assert RequestCache(path).get("k2") == {"texts": ["answer 2"]}  # but this process reads them
    cache.flush()
    assert {k: json.loads(v) for k, v in committed().items()} == {f"k{i}": {"texts": [f"answer {i}"]} for i in range(3)}


def test_an_unwritable_cache_path_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MoaaError, match=r"cache .*/file/cache.sqlite: cannot open .*; set cache.path to a writable"):
        RequestCache(tmp_path / "file" / "cache.sqlite")


def test_cached_client_asks_once_and_never_pins_an_empty_answer(tmp_path):
    texts = iter(["", "first", "second"])
    inner = FakeClient("ep", responder=lambda call: next(texts))
    stats = RunStats()
    client = CachedClient(inner, RequestCache(tmp_path / "c.sqlite"), stats)

    async def ask() -> Completion:
        return await client.chat(MESSAGES, Sampling(seed=3), tag="t@v1")

    assert asyncio.run(ask()).text == ""  # an empty answer is not stored...
    assert asyncio.run(ask()).text == "first"  # ...so it is asked again
    again = asyncio.run(ask())
    assert (again.text, again.cached, len(inner.calls)) == ("first", True, 2)
    assert stats.endpoints["ep"].cache_hits == 1


# ------------------------------------------------------------------ through the pipeline


def chat(srv: OpenAITestServer) -> list[dict]:
    return [r for r in srv.requests if r["path"] == "/v1/chat/completions"]


def test_what_a_changed_config_asks_again(tmp_path, prefect_harness, monkeypatch, capsys):
    """4 prompts: SFT by 3 proposers + an aggregator, preference by 3 candidates each judged pointwise."""
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path, 4)
    base = [
        f"prompts.path={prompts}", "prompts.limit=null",
        "preference.enabled=true", "preference.policy.endpoint=test", "preference.samples=3",
        "preference.scorer.judges=[{endpoint: test}]",
        "endpoints.judge={base_url: BASE, model: judge-model, max_retries: 3, backoff_s: 0.01}",
    ]  # fmt: skip
    with OpenAITestServer(responder=verdict_responder) as srv:

        def run(*overrides: str) -> list[dict]:
            """The chat requests one `moaa run` made."""
            before = len(chat(srv))
            items = [o.replace("BASE", srv.base_url) for o in (*base, *overrides)]
            assert run_main("run", str(write_config(tmp_path, srv.base_url, *items))) == 0, capsys.readouterr()
            return chat(srv)[before:]

        first = run()
        judged = [r for r in first if is_judge_request(r)]
        assert (len(first), len(judged)) == (4 * 4 + 4 + 4 * 3, 4 * 3)

        assert run() == []  # the same config again: not one call

        # Only the judge changes: only judge questions are asked, the same ones, of the new model.
        new_judge = run("preference.scorer.judges.0.endpoint=judge")
        assert sorted(json.dumps(r["body"]["messages"]) for r in new_judge) == sorted(
            json.dumps(r["body"]["messages"]) for r in judged
        )
        assert {r["model"] for r in new_judge} == {"judge-model"}

        # One proposer changes: it and the aggregator reading its answer are asked, nothing else.
        new_proposer = run("sft.proposers.0.temperature=0.9")
        temperatures = sorted(r["body"]["temperature"] for r in new_proposer)
        assert temperatures == [0.2] * 4 + [0.9] * 4  # 4 aggregator calls, 4 of proposer 0
        assert not any(is_judge_request(r) for r in new_proposer)

        # A fresh work folder is answered from the cache; without the cache, or with another
        # cache file, everything is asked again.
        assert run("run.work_dir=work2") == []
        assert len(run("run.work_dir=work3", "cache.enabled=false")) == len(first)
        other = tmp_path / "elsewhere" / "cache.sqlite"
        assert len(run("run.work_dir=work4", f"cache.path={other}")) == len(first)
        assert len(RequestCache(other)) == len(first)

        # An edited prompt file is a new run: only the changed prompt is asked (SFT, candidates, judge).
        lines = prompts.read_text().splitlines(keepends=True)
        prompts.write_text("".join(lines[:3]) + json.dumps({"prompt": "Question 3, edited."}) + "\n")
        edited = run()
    assert len(edited) == 4 + 1 + 3
    assert all("Question 3, edited." in json.dumps(r["body"]["messages"]) for r in edited)


def test_a_cache_hit_counts_what_its_answer_cost_to_make(tmp_path):
    """A version built from cache spent nothing this run, but its data still cost the original calls."""
    from moaa.config import EndpointConfig

    inner = FakeClient("ep", responder=lambda call: "four words of answer", prompt_tokens=1000)
    inner.endpoint = EndpointConfig(
        model="m", base_url="https://api.example.com/v1", price_input_per_mtok=2.0, price_output_per_mtok=10.0
    )
    stats = RunStats()
    client = CachedClient(inner, RequestCache(tmp_path / "c.sqlite"), stats)
    messages = [{"role": "user", "content": "hi"}]
    asyncio.run(client.chat(messages))  # the FakeClient records no cost itself: only the hit is priced here
    asyncio.run(client.chat(messages))
    counter = stats.endpoints["ep"]
    assert (counter.cache_hits, counter.cost) == (1, 0.0)
    assert counter.cached_cost == pytest.approx((1000 * 2.0 + 4 * 10.0) / 1e6)
