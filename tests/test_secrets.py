"""Secrets stay secret: an endpoint's API key and the Hub token appear in no file moaa writes
(rows, traces, cards, manifests, summaries, logs, the SQLite cache) nor in what it prints."""

from __future__ import annotations

import uuid

from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import assert_one_line_error, latest_version, run_main, verdict_responder, write_config


def files_holding(root, secrets: list[bytes]) -> list[str]:
    """Every file under `root` whose raw bytes contain one of `secrets`."""
    return [str(p) for p in root.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secrets)]


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
