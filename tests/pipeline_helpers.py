"""Helpers for running the whole pipeline in a subprocess against the OpenAI test server.

- `TestServerProcess`: `python -m moaa.testing.openai_server` as a child process with a request
  log file (so requests survive a killed client and can be counted across runs).
- `write_config`: the conftest base config, edited, written as YAML.
- `run_cli` / `start_cli`: `python -m moaa.cli run CONFIG ...` in a temp dir, waited for or not.
- `chat_requests`, `answered_bodies`: the server's chat-completion requests from its log.
- `version_rows`, `work_rows`: the rows of a written data set version / of the work folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from moaa.config import apply_override
from moaa.testing.server_process import ServerProcess
from tests.conftest import ROOT, base_raw

CLI_TIMEOUT_S = 420


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one, offline, quiet Prefect, the repo importable."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class TestServerProcess(ServerProcess):
    """The test server as a child process writing its request log to `log_path`."""

    def __init__(self, log_path: Path, *args: str):
        super().__init__(*args, log_path=log_path, env=cli_env())


def write_config(tmp_path: Path, base_url: str, *overrides: str, name: str = "config.yaml", **sections: Any) -> Path:
    """The conftest base config with `sections` replaced and `--set` style `overrides`, as YAML."""
    raw = base_raw(tmp_path, base_url) | sections
    for item in overrides:
        apply_override(raw, item)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def write_prompts(tmp_path: Path, count: int, name: str = "prompts.jsonl") -> Path:
    """`count` single-turn prompts as JSONL (one call per agent per prompt); pair with prompts.limit=null."""
    path = tmp_path / name
    path.write_text(
        "".join(json.dumps({"prompt": f"Question {i}: name {i} uses of a paperclip."}) + "\n" for i in range(count)),
        encoding="utf-8",
    )
    return path


def cli_command(config: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "moaa.cli", "run", str(config), *args]


def run_cli(
    config: Path | str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run `moaa run CONFIG ARGS` to the end; stdout and stderr as text."""
    return subprocess.run(
        cli_command(config, *args), cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout
    )


def start_cli(
    config: Path | str, *args: str, cwd: Path, env: dict[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen:
    """Start `moaa run CONFIG ARGS` without waiting (for kill and Ctrl-C tests); output to files in cwd.

    `new_session`: its own process group, like a terminal's foreground job (signal it with os.killpg).
    """
    with (cwd / "cli.stdout").open("a") as out, (cwd / "cli.stderr").open("a") as err:
        return subprocess.Popen(
            cli_command(config, *args), cwd=cwd, env=env or cli_env(), stdout=out, stderr=err,
            start_new_session=new_session,
        )  # fmt: skip


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a request log (a torn last line is ignored)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith("\n") and line.strip()]


def chat_requests(log_path: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(log_path) if r["path"] == "/v1/chat/completions"]


def body_key(body: Any) -> str:
    """A request body as a canonical string (equal bodies ask the same question)."""
    return json.dumps(body, sort_keys=True)


def answered_bodies(requests: list[dict[str, Any]]) -> set[str]:
    """Bodies of requests the server answered with a completion (status 200, no fault)."""
    return {body_key(r["body"]) for r in requests if r["status"] == 200 and r["fault"] is None}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll_s: float = 0.05) -> None:
    """Poll until `predicate()` is true; fail on timeout or when `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def version_rows(version_path: Path | str, config: str) -> list[dict[str, Any]]:
    """All rows (every split) of one config of a written data set version."""
    import pyarrow.parquet as pq

    files = sorted((Path(version_path) / "data" / config).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def work_rows(work_dir: Path, stage: str, name: str = "rows") -> list[dict[str, Any]]:
    """Every record of `<stage>/shard-*/<name>.jsonl` under a run's work folder."""
    from moaa.work.shards import read_jsonl

    return [r for path in sorted(Path(work_dir).glob(f"**/{stage}/shard-*/{name}.jsonl")) for r in read_jsonl(path)]


def latest_version(output_root: Path, name: str = "test-run") -> Path:
    dataset = Path(output_root) / name
    return dataset / (dataset / "LATEST").read_text().strip()


def assert_one_line_error(proc: subprocess.CompletedProcess | tuple[int, str], code: int | None = None) -> str:
    """The `error: ...` line of a failed CLI run (no traceback); checks the exit code when given."""
    rc, stderr = (proc.returncode, proc.stderr) if hasattr(proc, "returncode") else proc
    assert "Traceback" not in stderr, stderr
    assert rc != 0, stderr
    if code is not None:
        assert rc == code, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------ in-process runs and judges

CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def verdict_responder(request: dict) -> str | None:
    """Pointwise judge calls get a verdict whose rating follows the candidate's text; others the default."""
    shown = CANDIDATE_RE.findall(request["messages"][-1]["content"])
    if not shown:
        return None
    rating = 1 + int(hashlib.sha256(shown[0][1].encode()).hexdigest(), 16) % 5
    return json.dumps({k: {"rationale": f"{k} is {rating}", "rating": rating} for k in ASPECTS})


def is_judge_request(record: dict) -> bool:
    return "<candidate" in record["body"]["messages"][-1]["content"]


def run_main(*argv: str) -> int:
    """`moaa ARGV` in this process (inside the session's Prefect test harness); the exit code."""
    from moaa.cli import main

    return main(list(argv))


def prefect_api_url() -> str:
    """The API URL of the running Prefect test harness, for CLI subprocesses to share.

    A subprocess that starts its own ephemeral API waits 20-60 s for it on a loaded machine; the
    harness is already up for the session.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "prefect_api_url() needs the prefect_harness fixture"
    return url


def files_holding(root: Path, secrets: list[bytes]) -> list[str]:
    """Every file under `root` whose raw bytes contain one of `secrets`."""
    return [str(p) for p in root.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secrets)]


def prefect_database_folder() -> Path:
    """The folder of the Prefect test harness's SQLite database (its -wal and -shm files too)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    path = Path(url.split(":///", 1)[1])
    assert path.is_file(), url
    return path.parent


@contextmanager
def logged(name: str = "moaa") -> Iterator[list[str]]:
    """The messages logged under `name` (WARNING and up) while the block runs. A handler of its own:
    Prefect's console handler keeps the stderr of the test that configured it, and caplog's is gone
    once Prefect sets its logging up again."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
