"""Secrets stay secret: an endpoint's API key and the Hub token appear in no file moaa writes
(rows, traces, cards, manifests, summaries, logs, the SQLite cache) nor in what it prints."""

from __future__ import annotations

import uuid

import pytest

from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import (
    assert_one_line_error,
    files_holding,
    latest_version,
    prefect_database_folder,
    run_main,
    verdict_responder,
    version_rows,
    write_config,
)


def test_keys_never_reach_any_file_or_output(tmp_path, prefect_harness, monkeypatch, capsys, caplog):
    key = f"sk-moaa-canary-{uuid.uuid4().hex}"
    wrong = f"sk-moaa-canary-wrong-{uuid.uuid4().hex}"
    token = f"hf_moaacanary{uuid.uuid4().hex}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOAA_CANARY_KEY", key)
    monkeypatch.setenv("HF_TOKEN", token)
    with OpenAITestServer(api_key=key, responder=verdict_responder) as srv:  # judges' verdicts parse
        cfg = write_config(
            tmp_path, srv.base_url, "endpoints.test.api_key_env=MOAA_CANARY_KEY", "output.tags=[canary]",
            "preference.enabled=true", "preference.policy.endpoint=test", "preference.samples=2",
            "preference.scorer.judges=[{endpoint: test}]",
        )  # fmt: skip
        assert run_main("run", str(cfg)) == 0
        assert {r["status"] for r in srv.requests} == {200}  # the key was sent, and accepted
        version = latest_version(tmp_path / "data")
        # A refused key: the error names the variable, never its value.
        monkeypatch.setenv("MOAA_CANARY_KEY", wrong)
        rc = run_main("run", str(cfg), "--set", "run.work_dir=work2", "--set", "cache.enabled=false")
    out, err = capsys.readouterr()
    assert assert_one_line_error((rc, err), 3) == (
        "error: endpoint 'test' refused the key (HTTP 401): check the key in $MOAA_CANARY_KEY"
    )

    secrets = [key.encode(), wrong.encode(), token.encode()]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    # What was searched: the data set version, the work folder (shards, traces, summary), the cache.
    assert {"cache.sqlite", "config.yaml"} <= set(written)
    assert (version / "moaa_manifest.json").is_file() and (version / "README.md").is_file()
    assert any(p.endswith("sft/shard-00000/trace.jsonl") for p in written)
    assert any(p.endswith("summary.json") for p in written)
    assert files_holding(tmp_path, secrets) == []
    shown = out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert not any(s.decode() in shown for s in secrets)


def latest_flow_run_parameters() -> dict:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            return runs[0].parameters

    return asyncio.run(read())


@pytest.mark.slow
def test_an_echoed_key_reaches_no_file_nor_prefects_database(tmp_path, prefect_harness, monkeypatch, capsys, caplog):
    """A server that echoes the Authorization header in its 400 bodies, and a URL with credentials
    in a --set override: neither the key nor the password is in any file under the output, work or
    cache folders, in Prefect's database (flow-run parameters, logs, artifacts), or on the terminal."""
    from prefect.logging.handlers import APILogWorker

    key = f"sk-moaa-echo-{uuid.uuid4().hex}"
    password = f"pw-canary-{uuid.uuid4().hex}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOAA_ECHO_KEY", key)
    mirror = f"https://moaauser:{password}@example.com/data"
    with OpenAITestServer(api_key=key, echo_key=True, fault_rate=0.2, fault_mix=["400"], seed=5,
                          responder=verdict_responder) as srv:  # fmt: skip
        cfg = write_config(
            tmp_path, srv.base_url, "endpoints.test.api_key_env=MOAA_ECHO_KEY", "prompts.limit=6", "sft.min_answers=1",
            "preference.enabled=true", "preference.policy.endpoint=test", "preference.samples=2",
            "preference.scorer.judges=[{endpoint: test}]",
        )  # fmt: skip
        assert run_main("run", str(cfg), "--set", f"description=a mirror at {mirror}") == 0
        assert any(r["status"] == 400 for r in srv.requests)  # the key went back in error bodies
    APILogWorker.drain_all(timeout=5)  # the run's log lines are in the database
    out, err = capsys.readouterr()
    version = latest_version(tmp_path / "data")
    failures = version_rows(version, "failures")
    assert any("Authorization: Bearer <redacted:MOAA_ECHO_KEY>" in f["error"] for f in failures)  # echoed, scrubbed
    assert latest_flow_run_parameters()["overrides"] == ["description=a mirror at https://example.com/data"]
    secrets = [key.encode(), password.encode()]
    assert files_holding(tmp_path, secrets) == []  # output, work and cache folders
    assert files_holding(prefect_database_folder(), secrets) == []
    shown = out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert key not in shown and password not in shown


def test_scrub_text_takes_out_keys_and_url_credentials(monkeypatch):
    import json

    from moaa.public import add_secret, scrub, scrub_text

    add_secret('sk-quote"and\\slash-0123', "ODD_KEY")
    line = json.dumps({"error": 'echo sk-quote"and\\slash-0123', "url": "https://u:p@h.example/v1?x=1"})
    assert json.loads(scrub_text(line)) == {"error": "echo <redacted:ODD_KEY>", "url": "https://h.example/v1?x=1"}
    assert scrub_text("git clone ssh://git@github.com/x.git") == "git clone ssh://git@github.com/x.git"  # no password
    monkeypatch.setenv("SOME_TOKEN", "tok-12345678")
    assert scrub({"a": ["x tok-12345678"]}) == {"a": ["x <redacted:SOME_TOKEN>"]}


def test_scrub_sees_the_environment_and_keys_as_they_change(monkeypatch):
    """The secrets are read once and kept, but a variable set or changed, or a key read, later counts."""
    from moaa.public import add_secret, scrub_text

    assert scrub_text("a tok-abcdefgh b") == "a tok-abcdefgh b"
    monkeypatch.setenv("LATER_TOKEN", "tok-abcdefgh")
    assert scrub_text("a tok-abcdefgh b") == "a <redacted:LATER_TOKEN> b"
    monkeypatch.setenv("LATER_TOKEN", "tok-zyxwvuts")
    assert scrub_text("a tok-abcdefgh tok-zyxwvuts") == "a tok-abcdefgh <redacted:LATER_TOKEN>"
    monkeypatch.delenv("LATER_TOKEN")
    assert scrub_text("tok-zyxwvuts") == "tok-zyxwvuts"
    add_secret("key-read-later-0", "LATER_KEY_ENV")
    assert scrub_text("x key-read-later-0") == "x <redacted:LATER_KEY_ENV>"


@pytest.mark.parametrize(
    "value", ["sk-proj-0123456789abcdef", "hf_abcdefABCDEF0123456789", "my key", "ABCDEF0123456789XYZ42"]
)
def test_a_key_in_api_key_env_is_refused_without_echoing_it(tmp_path, value, capsys):
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1", f"endpoints.test.api_key_env={value}")
    for args in (("run", str(cfg)), ("run", str(cfg), "--dry-run")):
        rc = run_main(*args)
        line = assert_one_line_error((rc, capsys.readouterr().err), 2)
        assert "endpoints.test.api_key_env: expected the NAME of an environment variable" in line
        assert value not in line


def test_work_config_json_holds_no_url_credentials(tmp_path):
    from moaa.work.run_plan import plan_run
    from tests.conftest import make_config

    config = make_config(tmp_path, "https://api.example.com/v1", "description=https://user:s3cret-pass@example.com/x")
    plan = plan_run(config)
    text = (plan.work_dir / "config.json").read_text()
    assert "s3cret-pass" not in text and "https://example.com/x" in text


def test_url_credentials_are_refused_at_load_before_any_call(tmp_path, prefect_harness, capsys, monkeypatch):
    """aiohttp refuses a URL's user:password beside the Authorization header: once retried as a
    transient fault for every call of that endpoint, the run exiting 0 on the other proposers."""
    monkeypatch.chdir(tmp_path)
    password = f"pw-{uuid.uuid4().hex}"
    with OpenAITestServer() as srv:
        url = srv.base_url.replace("http://", f"http://moaauser:{password}@")
        cfg = write_config(
            tmp_path, srv.base_url, f"endpoints.fa={{base_url: '{url}', model: fa-model, max_retries: 1}}",
            "sft.proposers.2.endpoint=fa", "sft.min_answers=1",
        )  # fmt: skip
        rc = run_main("run", str(cfg))
        line = assert_one_line_error((rc, capsys.readouterr().err), 2)
        assert srv.requests == []
    assert "endpoints.fa.base_url: holds credentials (user:password@ before 127.0.0.1)" in line
    assert "api_key_env" in line and password not in line
    assert files_holding(tmp_path, [password.encode()]) == [str(cfg)]  # only the user's own file


@pytest.mark.parametrize(
    "extra_body, where",
    [
        ("{api_key: abc123}", "endpoints.test.extra_body.api_key"),
        ("{headers: {Authorization: Bearer abc}}", "endpoints.test.extra_body.headers.Authorization"),
        ("{user: sk-proj-0123456789abcdef}", "endpoints.test.extra_body.user"),
    ],
)
def test_a_key_in_extra_body_is_refused_without_echoing_it(tmp_path, capsys, extra_body, where):
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1", f"endpoints.test.extra_body={extra_body}")
    rc = run_main("run", str(cfg), "--dry-run")
    line = assert_one_line_error((rc, capsys.readouterr().err), 2)
    assert f"{where}: looks like a key, token or password" in line
    assert "abc" not in line.replace("api_key_env", "") and "sk-proj" not in line
    agent = write_config(tmp_path, "http://127.0.0.1:9/v1", "sft.aggregator.extra_body={token: abc123}")
    line = assert_one_line_error((run_main("run", str(agent), "--dry-run"), capsys.readouterr().err), 2)
    assert "sft.aggregator.extra_body.token: looks like a key" in line


def test_the_shard_writer_scrubs_what_it_is_given(tmp_path):
    """The last line of defence: a key that reached a row, a trace step or a failure is not written."""
    from moaa.public import add_secret
    from moaa.work.shard_result import ShardCounts, ShardResult
    from moaa.work.shards import ShardOutput

    key = f"sk-moaa-writer-{uuid.uuid4().hex}"
    add_secret(key, "WRITER_KEY")
    out = ShardOutput(tmp_path / "shard-00000")
    out.add([{"prompt_id": "a", "text": key}], [{"prompt_id": "a", "meta": f'{{"error": "{key}"}}'}],
            [{"prompt_id": "b", "error": f"HTTP 400 Bearer {key}"}])  # fmt: skip
    out.finish(ShardResult("sft", "shard-00000.jsonl", ShardCounts(), {"note": key}, {}, 0.0, 0.0))
    assert files_holding(tmp_path, [key.encode()]) == []
    assert "<redacted:WRITER_KEY>" in (tmp_path / "shard-00000" / "failures.jsonl").read_text()
