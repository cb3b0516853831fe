"""The request cache: keys from what decides an answer, durable across processes, and what a
changed config re-asks (nothing, only the judge, or a proposer and what reads its answer)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

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


def test_a_row_put_after_a_commit_is_committed_by_age_without_a_flush(tmp_path):
    """The writer thread, idle after its first batch, wakes for the next row: answers of a call that
    has no shard journal behind it (the instruction stage) survive a kill once BATCH_S old."""
    import sqlite3

    path = tmp_path / "cache.sqlite"
    cache = RequestCache(path)

    def committed() -> set[str]:
        with sqlite3.connect(path) as conn:
            return {key for (key,) in conn.execute("SELECT key FROM answers")}

    for key in ("first", "second"):
        cache.put(key, {"texts": [key]})
        deadline = time.monotonic() + 5
        while key not in committed() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert committed() == {"first", "second"}


def test_an_unwritable_cache_path_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MoaaError, match=r"cache .*/file/cache.sqlite: cannot open .*; set cache.path to a writable"):
        RequestCache(tmp_path / "file" / "cache.sqlite")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_says_to_move_it_aside_before_any_call(tmp_path, prefect_harness, capsys, monkeypatch, damage):
    """Once "set cache.path to a writable file" (the wrong fix), after Prefect's start-up."""
    from tests.pipeline_helpers import assert_one_line_error, run_main, write_config

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cache.sqlite"
    if damage == "garbage":
        path.write_bytes(b"not a database at all " * 100)
    else:
        cache = RequestCache(path)
        for i in range(2000):
            cache.put(f"k{i}", {"texts": ["x" * 400]})
        cache.flush()
        import sqlite3

        sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = path.read_bytes()
        for extra in ("-wal", "-shm"):
            (tmp_path / f"cache.sqlite{extra}").unlink(missing_ok=True)
        path.write_bytes(data[: len(data) // 2])
    with OpenAITestServer() as srv:
        started = time.monotonic()
        rc = run_main("run", str(write_config(tmp_path, srv.base_url)))
        assert srv.requests == [] and time.monotonic() - started < 5  # before Prefect's start-up
    line = assert_one_line_error((rc, capsys.readouterr().err), 2)
    assert line.startswith(f"error: cache {path} is damaged (")
    assert line.endswith(
        f"move it aside (mv {path} {path}.damaged) or delete it, and its answers are asked again; "
        "or set cache.path to another file"
    )


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


def test_an_answer_echoing_a_key_is_cached_scrubbed_and_a_numeric_key_leaves_numbers_alone(tmp_path, monkeypatch):
    """The stored answer is scrubbed as JSON text, and every string of it when a key is in there:
    a key made of digits that a token count happens to spell stays in the count (valid JSON)."""
    key = "sk-moaa-answer-0123456789"
    monkeypatch.setenv("MOAA_ANSWER_KEY", key)
    monkeypatch.setenv("MOAA_DIGITS_TOKEN", "123456789")
    inner = FakeClient("ep", responder=lambda call: f"your key is {key}", prompt_tokens=123456789)
    cache = RequestCache(tmp_path / "c.sqlite")
    client = CachedClient(inner, cache, RunStats())
    asyncio.run(client.chat(MESSAGES, Sampling(seed=3)))
    cache.flush()
    (stored,) = cache._conn().execute("SELECT value FROM answers").fetchall()
    answer = json.loads(stored[0])
    assert answer["texts"] == ["your key is <redacted:MOAA_ANSWER_KEY>"] and key not in stored[0]
    assert answer["prompt_tokens"] == 123456789
    assert asyncio.run(client.chat(MESSAGES, Sampling(seed=3))).cached  # and it is served from the cache


def test_a_paid_answer_is_journaled_as_json_and_replays_to_the_same_text(tmp_path):
    """`note_paid` keeps the answer as JSON in the journal (`ar`); replay gives back the text the
    cache holds, and journals of earlier versions (`a`, a JSON string) replay as before."""
    text = json.dumps({"texts": ['a "quoted" answer\nwith ünïcode'], "prompt_tokens": 3, "latency_s": 0.1},
                      ensure_ascii=False)  # fmt: skip
    stats = RunStats(journal=(tmp_path / "calls.jsonl").open("ab", buffering=0))
    stats.note_paid("k1", text)
    stats.note_paid("k0")
    lines = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"paid": "k1", "ar": json.loads(text)} and lines[1] == {"paid": "k0"}
    assert RunStats().replay(lines + [{"paid": "k2", "a": text}]) == {"k1": text, "k0": None, "k2": text}


def test_journal_records_of_a_loop_step_go_in_one_write_and_the_cache_put_follows_it(tmp_path):
    """Records made on an event loop are in the OS by the end of the loop's step, together, a paid
    answer's too; what follows a paid record (the cache's put of the answer) runs after that write."""
    writes: list[bytes] = []

    class Journal:
        closed = False

        def write(self, data: bytes) -> int:
            writes.append(data)
            return len(data)

    async def step() -> list[int]:
        stats = RunStats(journal=Journal())
        seen = []
        stats.record("ep", "t", 0.1, calls=1)
        stats.record("ep", "t", 0.2, calls=1)
        seen.append(len(writes))  # nothing yet: the step is not over
        await asyncio.sleep(0)
        seen.append(len(writes))  # one write of both records
        stats.record("ep", "t", 0.3, calls=1)
        stats.note_paid("k", '{"texts": ["x"]}', then=lambda: seen.append(("put after write", len(writes))))
        seen.append(len(writes))  # the paid answer waits for the step's end too
        await asyncio.sleep(0)
        seen.append(len(writes))  # one write of the record and the paid answer
        return seen

    assert asyncio.run(step()) == [0, 1, 1, ("put after write", 2), 2]
    assert writes[0].count(b"\n") == 2 and writes[1].count(b"\n") == 2 and b'"paid": "k"' in writes[1]
    stats = RunStats(journal=Journal())
    stats.record("ep", "t", 0.1, calls=1)  # off any event loop (a thread's client): at once
    assert len(writes) == 3


def test_an_answer_whose_record_waits_is_served_to_the_same_request_and_committed_after_it(tmp_path):
    """Between the answer and its journal write (the loop step's end), the same request is a cache
    hit from memory, not a second paid call; the cache holds the answer only once it is journaled."""
    inner = FakeClient("ep", responder=lambda call: "an answer")
    cache = RequestCache(tmp_path / "c.sqlite")
    journal = tmp_path / "calls.jsonl"
    stats = RunStats(journal=journal.open("ab", buffering=0))
    client = CachedClient(inner, cache, stats)

    async def go() -> tuple:
        first = await client.chat(MESSAGES, Sampling(seed=1))
        in_cache = cache._writer.get(next(iter(client._unwritten)))  # the put waits for the journal
        again = await client.chat(MESSAGES, Sampling(seed=1))  # same step: the record is not written yet
        journaled = journal.read_text()
        await asyncio.sleep(0)
        return first, in_cache, again, journaled, journal.read_text()

    first, in_cache, again, before, after = asyncio.run(go())
    assert not first.cached and again.cached and again.text == "an answer" and len(inner.calls) == 1
    assert in_cache is None and '"paid"' not in before and '"paid"' in after
    assert client._unwritten == {}
    cache.flush()
    assert len(cache) == 1


def _locks_on(path: Path) -> list[str]:
    """This process's POSIX locks on `path`'s file, as /proc/locks lists them (without the line's ordinal,
    which moves as other processes take and drop locks)."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return [x.split(":", 1)[1].strip() for x in lines if f" {os.getpid()} " in x and inode in x]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_opening_the_cache_again_keeps_the_locks_sqlite_holds_on_it(tmp_path):
    """Reading the file's header with open()/close() beside a live connection dropped every lock the
    process held on the file (POSIX locks belong to the process), under SQLite's feet."""
    path = tmp_path / "cache.sqlite"
    first = RequestCache(path)
    first.put("k", {"texts": ["x"]})
    first.flush()
    held = _locks_on(path)
    assert held  # WAL mode: an open connection keeps a shared lock on the database file
    RequestCache(path)  # a second cache of the same file in this process (a shard, a flow task)
    assert _locks_on(path) == held
