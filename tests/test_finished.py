"""A finished config re-run through the CLI (moaa.work.finished): one line naming the newest version,
no model call, no new version and no Prefect; anything that a run would change takes the flow.

Run: .venv/bin/python -m pytest tests/test_finished.py -x -q
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from moaa.config import PromptSourceConfig
from moaa.sources import file_fingerprint, stream_prompts
from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import cli_env, run_cli, run_main, write_config, write_prompts


def _dead_url() -> str:
    """A Prefect API URL nobody answers: a flow run against it fails, so rc 0 means no flow ran."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def _versions(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "data" / "test-run").iterdir() if p.name.startswith("v"))


def _first_run(tmp_path: Path, srv: OpenAITestServer, *overrides: str) -> Path:
    prompts = write_prompts(tmp_path, 4)
    cfg = write_config(tmp_path, srv.base_url, f"prompts.path={prompts}", "prompts.limit=null", *overrides)
    assert run_main("run", str(cfg)) == 0
    assert _versions(tmp_path) == ["v1"]
    return cfg


@pytest.mark.slow
def test_a_finished_config_rerun_says_up_to_date_without_prefect_or_calls(tmp_path, prefect_harness, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg = _first_run(tmp_path, srv)
        asked = len(srv.requests)
        home = tmp_path / "prefect-home"
        env = cli_env(PREFECT_API_URL=_dead_url(), PREFECT_HOME=str(home))
        again = run_cli(cfg, cwd=tmp_path, env=env)
        assert len(srv.requests) == asked  # not one model call
    assert again.returncode == 0, again.stderr
    v1 = tmp_path / "data" / "test-run" / "v1"
    assert again.stdout == f"up to date: {v1} (4 SFT rows, 0 DPO pairs); nothing to do\n"
    assert _versions(tmp_path) == ["v1"] and not home.exists()  # no version written, Prefect never started


def _change(kind: str, tmp_path: Path, cfg: Path) -> list[str]:
    """Make the finished run of `cfg` unfinished in one way; the --set items of the re-run."""
    work = next((tmp_path / "work" / "test-run").iterdir())
    if kind == "config":
        return ["--set", "output.license=mit"]  # same work folder (not in the fingerprint), another version
    if kind == "new prompt":
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text(prompts.read_text() + json.dumps({"prompt": "Question 9: one more."}) + "\n")
    elif kind == "unfinished shard":
        (work / "sft" / "shard-00000" / "DONE").unlink()
    elif kind == "missing version":
        import shutil

        shutil.rmtree(tmp_path / "data" / "test-run" / "v1")
    elif kind == "edited version":
        next((tmp_path / "data" / "test-run" / "v1" / "data" / "sft").glob("*.parquet")).write_bytes(b"x")
    return []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["config", "new prompt", "unfinished shard", "missing version", "edited version"])
def test_what_is_not_finished_runs_the_flow(tmp_path, prefect_harness, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    with OpenAITestServer() as srv:
        cfg = _first_run(tmp_path, srv)
        extra = _change(kind, tmp_path, cfg)
        capsys.readouterr()
        assert run_main("run", str(cfg), *extra) == 0
    out = capsys.readouterr().out
    assert "up to date" not in out and "moaa run 'test-run' finished" in out
    assert _versions(tmp_path) == (["v1"] if kind == "missing version" else ["v1", "v2"])


@pytest.mark.slow
def test_a_transient_failure_is_asked_again_through_the_flow(tmp_path, prefect_harness, monkeypatch, capsys):
    from test_rerun_failures import PerPromptFaults

    monkeypatch.chdir(tmp_path)
    with PerPromptFaults({2: "500"}) as srv:
        cfg = _first_run(tmp_path, srv, "cache.enabled=false")
        srv.faults, before = {}, len(srv.requests)  # the outage is over
        capsys.readouterr()
        assert run_main("run", str(cfg)) == 0
        assert all("Question 2:" in str(r["body"]["messages"]) for r in srv.requests[before:])
        assert len(srv.requests) - before == 4  # its 3 proposers and the aggregator, nothing else
    out = capsys.readouterr().out
    assert "re-asking 1 prompts that failed transiently" in out and "up to date" not in out
    assert _versions(tmp_path) == ["v1", "v2"]
    assert run_main("run", str(cfg)) == 0  # now finished: up to date
    assert capsys.readouterr().out.startswith("up to date: ") and _versions(tmp_path) == ["v1", "v2"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json", ".parquet"])
def test_file_fingerprint_is_the_one_stream_prompts_gives(tmp_path, suffix):
    rows = [{"prompt": f"Question {i}: name {i} uses of a paperclip."} for i in range(3)]
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".csv":
        path.write_text("prompt\n" + "".join(f'"{r["prompt"]}"\n' for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = PromptSourceConfig(path=path.name, min_chars=1)
    with stream_prompts(cfg, base_dir=tmp_path) as stream:
        assert file_fingerprint(cfg, tmp_path) == stream.fingerprint
    assert file_fingerprint(PromptSourceConfig(path=str(tmp_path)), tmp_path) is None  # a folder: read its rows
