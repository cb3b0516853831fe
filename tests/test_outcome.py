"""A run that made nothing fails: whatever the number of prompts, a stage in which no prompt became a
row ends the run non-zero with one line naming the commonest cause, the endpoint and its URL, and
writes no version; fixing the cause and running the same command again asks those prompts again."""

from __future__ import annotations

import json

from moaa.testing.openai_server import OpenAITestServer
from moaa.train.data import find_dataset
from tests.pipeline_helpers import (
    assert_one_line_error,
    cli_env,
    prefect_api_url,
    run_cli,
    run_main,
    version_rows,
    write_config,
)


def _dead_port() -> int:
    import socket

    with socket.socket() as sock:  # bound and closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_dead_endpoint_exits_non_zero_naming_it_and_writes_no_version(tmp_path, prefect_harness):
    port = _dead_port()
    cfg = write_config(tmp_path, f"http://127.0.0.1:{port}/v1", "endpoints.test.max_retries=1")
    proc = run_cli(cfg, cwd=tmp_path, env=cli_env(PREFECT_API_URL=prefect_api_url()))
    line = assert_one_line_error(proc, code=4)
    assert line.startswith("error: sft: all 4 prompts failed; commonest cause (4 of 4 failed prompts): ")
    assert "connection failed" in line
    assert f"(endpoint 'test' at http://127.0.0.1:{port}/v1)" in line
    assert f"failures: {tmp_path / 'work'}" in line and "run the same command again" in line
    assert not (tmp_path / "data" / "test-run").exists()  # no version, so no LATEST either


def _aggregator_down(request: dict) -> str | None:
    if any("Other assistants have already answered" in (m.get("content") or "") for m in request["messages"]):
        raise RuntimeError("aggregator down")
    return None


def test_a_small_run_whose_aggregator_fails_everywhere_fails_then_resumes(tmp_path, prefect_harness, capsys):
    """4 prompts (under run.min_prompts_for_failure_rate) with every aggregation failing: exit 4, no
    version; the same command with the server fixed then answers all four and writes v1."""
    with OpenAITestServer(responder=_aggregator_down) as srv:
        cfg = write_config(tmp_path, srv.base_url, "endpoints.test.max_retries=1")
        assert run_main("run", str(cfg)) == 4
        err = capsys.readouterr().err
        assert "error: sft: all 4 prompts failed; commonest cause (4 of 4 failed prompts): aggregator_failed" in err
        assert "HTTP 500" in err and f"at {srv.base_url})" in err
        assert not (tmp_path / "data" / "test-run").exists()
        srv.responder = None  # the cause is fixed
        assert run_main("run", str(cfg)) == 0
    sft = version_rows(tmp_path / "data" / "test-run" / "v1", "sft")
    assert len(sft) == 4 and version_rows(tmp_path / "data" / "test-run" / "v1", "failures") == []


def test_some_failures_still_write_the_version_and_show_the_count(tmp_path, prefect_harness, capsys):
    from moaa.config import PromptSourceConfig
    from moaa.sources import load_prompts
    from tests.conftest import ROOT

    first = load_prompts(PromptSourceConfig(path=str(ROOT / "configs/prompts/default.jsonl"), limit=4)).prompts[0]
    poisoned = next(m["content"] for m in first.messages if m["role"] == "user")

    def responder(request: dict) -> str | None:
        if any(poisoned in (m.get("content") or "") for m in request["messages"]):
            raise RuntimeError("poisoned")
        return None

    with OpenAITestServer(responder=responder) as srv:
        cfg = write_config(tmp_path, srv.base_url, "endpoints.test.max_retries=0", "run.max_failure_rate=1")
        assert run_main("run", str(cfg)) == 0
    out = capsys.readouterr().out
    assert "sft        rows      3  failed    1" in out
    assert len(version_rows(tmp_path / "data" / "test-run" / "v1", "sft")) == 3


def test_training_never_picks_a_version_without_rows_of_its_config(tmp_path):
    """An older empty (or SFT-only) version is skipped for the newest one that has the rows."""
    from moaa.dataset.versions import write_version

    def write(name: str, sft: int, dpo: int, when: str):
        work = tmp_path / f"work-{name}-{when}"
        work.mkdir()
        parts = {}
        for config, count in (("sft", sft), ("dpo", dpo), ("failures", 1)):
            path = work / f"{config}.jsonl"
            rows = [_row(config, f"{name}-{when}-{i}") for i in range(count)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            parts[config] = [path] if count else []
        return write_version(
            tmp_path / "data", name, parts, config={"name": name}, run_info={}, test_size=0.0, split_seed=0,
            license="apache-2.0", tags=[],
        )  # fmt: skip

    write("good", sft=3, dpo=2, when="1")
    write("empty", sft=0, dpo=0, when="2")  # written later: the newest data set
    write("sftonly", sft=2, dpo=0, when="3")
    assert find_dataset(None, tmp_path / "data", config="sft").ref == "sftonly@v1"
    assert find_dataset(None, tmp_path / "data", config="dpo").ref == "good@v1"
    assert find_dataset("sftonly@v1", tmp_path / "data", config="dpo").ref == "sftonly@v1"  # explicit wins


def _row(config: str, pid: str) -> dict:
    if config == "failures":
        return {"prompt_id": pid, "stage": "sft", "reason": "aggregator_failed", "error": "down"}
    turn = [{"role": "user", "content": f"q {pid}"}]
    if config == "sft":
        return {"prompt_id": pid, "messages": [*turn, {"role": "assistant", "content": "a"}], "source": "t",
                "method": "single", "models": ["m"], "category": None}  # fmt: skip
    answer = [{"role": "assistant", "content": "good"}]
    worse = [{"role": "assistant", "content": "bad"}]
    return {"prompt_id": pid, "prompt": turn, "chosen": answer, "rejected": worse, "score_chosen": 2.0,
            "score_rejected": 1.0, "chosen_model": "m", "rejected_model": "m"}  # fmt: skip
