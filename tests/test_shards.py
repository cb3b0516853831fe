"""Shard files: prompt-by-prompt appends, resume after a torn write, DONE markers, input splits."""

from __future__ import annotations

import json

import pytest

from moaa.fileio import write_jsonl_atomic
from moaa.work.shard_result import ShardCounts, ShardResult
from moaa.work.shards import ShardOutput, read_done, read_jsonl, reopen_failures, split_into_shards


def result(pid: str, failed: bool = False) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows, trace, failures) of one prompt."""
    trace = [{"prompt_id": pid, "kind": "proposal", "text": f"t-{pid}"}]
    if failed:
        return [], trace, [{"prompt_id": pid, "stage": "sft", "reason": "aggregator_failed", "error": "x"}]
    return [{"prompt_id": pid, "text": f"row-{pid}"}], trace, []


def test_rows_are_on_disk_after_each_prompt(tmp_path):
    out = ShardOutput(tmp_path / "shard-00000")
    out.add(*result("a"))
    # Readable before close: a SIGKILL now keeps prompt "a".
    assert [r["prompt_id"] for r in read_jsonl(out.path("rows"))] == ["a"]
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a"]
    out.close()


def test_resume_skips_finished_prompts_and_cuts_a_torn_tail(tmp_path):
    folder = tmp_path / "shard-00000"
    out = ShardOutput(folder)
    out.add(*result("a"))
    out.add(*result("b"))
    out.close()
    # A kill in the middle of writing prompt "c": its trace line is complete, its row is torn.
    with out.path("trace").open("a") as fh:
        fh.write(json.dumps({"prompt_id": "c", "kind": "proposal", "text": "t-c"}) + "\n")
    with out.path("rows").open("a") as fh:
        fh.write('{"prompt_id": "c", "te')

    again = ShardOutput(folder)
    assert again.done_ids == {"a", "b"}
    assert out.path("rows").read_text().endswith("}\n")  # the torn line is gone from the file
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a", "b"]  # c is asked again
    again.add(*result("c"))
    finished = ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=3, rows=3), {}, {}, 1.5, 2.0)
    again.finish(finished)
    assert [r["prompt_id"] for r in read_jsonl(out.path("rows"))] == ["a", "b", "c"]
    assert [r["prompt_id"] for r in read_jsonl(out.path("trace"))] == ["a", "b", "c"]
    assert read_done(folder) == finished  # typed in, typed out: JSON only inside the DONE file
    assert ShardOutput(folder).complete


def test_failures_of_an_unfinished_shard_are_retried_on_resume(tmp_path):
    """A shard stopped early (failure rate, Ctrl-C) asks its failed prompts again when resumed: the
    run's plan takes them out (reopen_failures), whatever their class."""
    folder = tmp_path / "shard-00000"
    out = ShardOutput(folder)
    out.add(*result("a"))
    out.add(*result("b", failed=True))
    out.close()
    assert reopen_failures(folder) == {"transient": 1, "other": 0, "permanent": 0}
    again = ShardOutput(folder)
    assert again.done_ids == {"a"}
    assert list(read_jsonl(again.path("failures"))) == []
    assert [r["prompt_id"] for r in read_jsonl(again.path("trace"))] == ["a"]
    again.add(*result("b", failed=True))
    again.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(), {}, {}, 0.0, 0.0))
    # Finished: the failure is part of the shard's result and stays.
    done = ShardOutput(folder)
    assert done.complete and done.done_ids == {"a", "b"}
    assert [r["prompt_id"] for r in read_jsonl(done.path("failures"))] == ["b"]
    done.close()


def test_read_jsonl_ignores_an_unterminated_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3')
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []


def test_split_into_shards_is_stable(tmp_path):
    records = [{"prompt_id": str(i)} for i in range(5)]
    paths = split_into_shards(records, tmp_path / "inputs", 2)
    assert [p.name for p in paths] == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    assert [[r["prompt_id"] for r in read_jsonl(p)] for p in paths] == [["0", "1"], ["2", "3"], ["4"]]
    before = [p.read_bytes() for p in paths]
    assert split_into_shards(records, tmp_path / "inputs", 2) == paths
    assert [p.read_bytes() for p in paths] == before


def test_atomic_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a" / "b.jsonl"
    assert write_jsonl_atomic(path, [{"x": 1}, {"x": 2}]) == 2
    assert list(read_jsonl(path)) == [{"x": 1}, {"x": 2}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.jsonl"]


def test_done_counts_follow_the_done_file(tmp_path):
    """read_done_counts parses a DONE file once, but a rewritten or removed DONE is read afresh."""
    from moaa.work.shards import read_done_counts

    out = ShardOutput(tmp_path / "shard-00000")
    out.add(*result("a"))
    assert read_done_counts(out.folder) is None
    out.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=1, rows=1), {}, {}, 1.0, 2.0))
    assert read_done_counts(out.folder) == ShardCounts(prompts=1, rows=1)
    (out.folder / "DONE").unlink()  # reopened for its transient failures
    assert read_done_counts(out.folder) is None
    again = ShardOutput(out.folder)
    again.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(prompts=1, failed=1), {}, {}, 1.0, 3.0))
    assert read_done_counts(out.folder) == ShardCounts(prompts=1, failed=1)


def test_a_prompts_row_is_written_after_the_journal_of_its_calls(tmp_path):
    """A kill right after a row lands must not lose its calls' accounting: ShardOutput writes the
    journal's waiting records before the row, though the loop's step is not over."""
    import asyncio

    from moaa.models.stats import RunStats

    async def one_prompt() -> list[str]:
        output = ShardOutput(tmp_path / "shard-00000")
        stats = RunStats()
        output.journal(stats)
        stats.record("ep", "sft.a@v1", 0.1, calls=1, prompt_tokens=5)
        journal = tmp_path / "shard-00000" / "calls.jsonl"
        before = journal.read_text()
        output.add([{"prompt_id": "p1", "messages": []}], [], [])
        after = [json.loads(line)["c"]["calls"] for line in journal.read_text().splitlines()]
        output.close()
        return [before, after]

    before, after = asyncio.run(one_prompt())
    assert before == "" and after == [1]


# ------------------------------------------------------------------ damaged work files, through whole runs

DAMAGED_DONE = {
    "empty": b"",
    "torn": b'{"stage": "sft", "shard": "shard-000',
    "garbage": b"\x00\x01 not json \xff",
    "older layout": json.dumps({"stage": "sft", "shard": "shard-00000.jsonl", "stats": {}, "rows": 2}).encode(),
}


WHY_DONE = dict.fromkeys(("empty", "torn", "garbage"), "not JSON (empty, torn or garbage)") | {
    "older layout": "no counts of prompts, rows and failures: written by an older moaa"
}


def _finished_run(tmp_path, srv):
    from tests.pipeline_helpers import run_main, write_config

    cfg = write_config(tmp_path, srv.base_url)
    assert run_main("run", str(cfg)) == 0  # 4 prompts in shards of 2
    shard = next((tmp_path / "work").glob("test-run/*/sft/shard-00000"))
    return cfg, shard


@pytest.mark.parametrize("damage", list(DAMAGED_DONE))
def test_a_damaged_done_redoes_its_shard(tmp_path, prefect_harness, capsys, monkeypatch, damage):
    """Once a JSONDecodeError traceback (read_done), or for an older layout a version saying rows 0."""
    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import latest_version, logged, run_main, version_rows

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv, logged() as warnings:
        cfg, shard = _finished_run(tmp_path, srv)
        (shard / "DONE").write_bytes(DAMAGED_DONE[damage])
        asked = len(srv.requests)
        capsys.readouterr()
        assert run_main("run", str(cfg)) == 0
        assert len(srv.requests) == asked  # its rows were on disk: nothing asked again
    out = capsys.readouterr().out
    assert "rows      4  failed    0" in out
    assert [w for w in warnings if "damaged" in w] == [
        f"shard sft/shard-00000's work file DONE is damaged ({WHY_DONE[damage]}): redoing the shard: its prompts "
        "without a row on disk are asked again (cached answers kept)"
    ]
    version = latest_version(tmp_path / "data")
    assert version.name == "v2" and len(version_rows(version, "sft")) == 4
    assert json.loads((version / "moaa_manifest.json").read_text())["counts"]["rows"]["sft"] == {"train": 4}
    assert read_done(shard).counts.rows == 2


@pytest.mark.parametrize("name", ["calls", "rows", "failures", "trace"])
def test_a_damaged_line_in_an_unfinished_shard_is_dropped_and_its_prompt_asked_again(
    tmp_path, prefect_harness, monkeypatch, name
):
    """Once a traceback from the journal's replay (calls.jsonl) or the resume's reads."""
    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import latest_version, logged, run_main, version_rows

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv, logged() as warnings:
        cfg, shard = _finished_run(tmp_path, srv)
        (shard / "DONE").unlink()  # killed before it finished
        path = shard / f"{name}.jsonl"
        lines = path.read_text().splitlines(keepends=True) or ['{"prompt_id": "x"}\n']
        path.write_text("".join([lines[0], "garbage {\n", *lines[1:]]))
        assert run_main("run", str(cfg)) == 0
    damaged = (
        f"shard sft/shard-00000's work file {name}.jsonl is damaged (1 line(s) that are not records, first at line 2)"
    )
    assert any(w.startswith(damaged) for w in warnings), warnings
    version = latest_version(tmp_path / "data")
    assert len(version_rows(version, "sft")) == 4 and version_rows(version, "failures") == []
    assert "garbage" not in path.read_text()


def test_a_damaged_row_of_a_finished_shard_stops_the_write_and_the_next_run_redoes_it(
    tmp_path, prefect_harness, capsys, monkeypatch
):
    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import assert_one_line_error, latest_version, run_main, version_rows

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg, shard = _finished_run(tmp_path, srv)
        rows = shard / "rows.jsonl"
        first, second = rows.read_text().splitlines(keepends=True)
        rows.write_text(first + second.replace('"prompt_id"', '"prompt_id', 1))  # line 2: read by the write only
        (tmp_path / "data" / "test-run" / "v1" / "README.md").unlink()  # so that the flow writes a version
        line = assert_one_line_error((run_main("run", str(cfg)), capsys.readouterr().err), 2)
        assert line.startswith(f"error: {rows}:2: not valid JSON (")
        assert line.endswith("no data set version was written; run the same command again: its shard is redone "
                             "(its other rows and cached answers are kept)")  # fmt: skip
        assert not (shard / "DONE").exists()
        assert run_main("run", str(cfg)) == 0
    version = latest_version(tmp_path / "data")
    assert len(version_rows(version, "sft")) == 4


def test_a_resumed_shard_counts_its_finished_prompts_as_a_clean_run(tmp_path, prefect_harness, monkeypatch):
    """A kill during preference once left the card's samples and judge_calls lower than a clean run's:
    the counters of the prompts finished before the kill were lost with the attempt."""
    from moaa.testing.openai_server import OpenAITestServer
    from tests.pipeline_helpers import latest_version, run_main, verdict_responder

    monkeypatch.chdir(tmp_path)
    with OpenAITestServer(responder=verdict_responder) as srv:
        cfg = write_config_with_preference(tmp_path, srv.base_url)
        assert run_main("run", str(cfg)) == 0
        shards = sorted((tmp_path / "work").glob("test-run/*/*/shard-*"))
        clean = {s: read_done(s).counts.counters for s in shards}
        assert any(c.get("judge_calls") and c.get("samples") for c in clean.values())
        for shard in shards:  # killed after its last prompt's row, before its DONE
            (shard / "DONE").unlink()
        asked = len(srv.requests)
        (tmp_path / "data" / "test-run" / "v1" / "README.md").unlink()  # not "up to date": write a version
        assert run_main("run", str(cfg)) == 0
        assert len(srv.requests) == asked
    assert {s: read_done(s).counts.counters for s in shards} == clean
    card = json.loads((latest_version(tmp_path / "data") / "moaa_manifest.json").read_text())
    assert card["counts"]["stages"]["preference"]["counters"]["samples"] == sum(
        c.get("samples", 0) for s, c in clean.items() if s.parent.name == "preference"
    )


def write_config_with_preference(tmp_path, url):
    from tests.pipeline_helpers import write_config

    return write_config(
        tmp_path, url, "preference.enabled=true", "preference.policy={endpoint: test}", "preference.samples=3",
        "preference.scorer.judges=[{endpoint: test}]", "preference.min_margin=0",
    )  # fmt: skip
