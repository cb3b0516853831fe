"""Crash safety: `moaa run` killed (SIGKILL) or interrupted (Ctrl-C) at several points, then run again.

The CLI runs as a subprocess against the OpenAI test server in another subprocess, whose request
log survives every kill. The replies are deterministic per request and the engine seeds every
call, so the resumed run must end with exactly the rows of a clean run, and the log shows what
each resumed run asked again: at most the calls that were in flight when it was stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from moaa.testing.openai_server import OpenAITestServer
from tests.pipeline_helpers import (
    TestServerProcess,
    answered_bodies,
    body_key,
    chat_requests,
    cli_env,
    latest_version,
    prefect_api_url,
    run_cli,
    run_main,
    start_cli,
    version_rows,
    wait_for,
    work_rows,
    write_config,
    write_prompts,
)

PROMPTS = 12
MAX_CONCURRENCY = 3


def settings(tmp_path, prompts_path) -> list[str]:
    """12 prompts in 3 shards of 4 run one after another, at most 3 calls in flight."""
    return [
        f"prompts.path={prompts_path}", "prompts.limit=null", "run.shard_size=4", "run.max_parallel_shards=1",
        f"endpoints.test.max_concurrency={MAX_CONCURRENCY}", "endpoints.test.timeout_s=30",
    ]  # fmt: skip


def clean_rows(tmp_path, prompts_path, monkeypatch) -> dict[str, list]:
    """prompt_id -> messages of an uninterrupted run (in this process, its own server and folders)."""
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    with OpenAITestServer() as srv:
        cfg = write_config(clean, srv.base_url, *settings(clean, prompts_path))
        assert run_main("run", str(cfg)) == 0
    return {r["prompt_id"]: r["messages"] for r in version_rows(latest_version(clean / "data"), "sft")}


def stop_when(proc: subprocess.Popen, sig: int, condition, what: str) -> int:
    """Send `sig` once `condition()` holds; the exit code."""
    wait_for(condition, timeout=240, what=what, proc=proc)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


@pytest.mark.slow
def test_killed_and_interrupted_runs_resume_to_the_rows_of_a_clean_run(tmp_path, prefect_harness, monkeypatch):
    prompts_path = write_prompts(tmp_path, PROMPTS)
    expected = clean_rows(tmp_path, prompts_path, monkeypatch)
    assert len(expected) == PROMPTS

    env = cli_env(PREFECT_API_URL=prefect_api_url())
    sft = tmp_path / "work" / "test-run"
    log = tmp_path / "requests.jsonl"
    with TestServerProcess(log, "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, prompts_path))

        def answered() -> int:
            return len(answered_bodies(chat_requests(log)))

        def shards_done() -> int:
            return len(list(sft.glob("*/sft/shard-*/DONE")))

        segments = [0]  # request-log positions where each run ended
        # 1. SIGKILL in the middle of the first shard, once its first row is on disk.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        assert stop_when(proc, signal.SIGKILL, lambda: work_rows(sft, "sft"), "a first row") == -signal.SIGKILL
        segments.append(len(chat_requests(log)))
        ids = [r["prompt_id"] for r in work_rows(sft, "sft")]
        assert len(ids) == len(set(ids)) < PROMPTS
        assert shards_done() == 0

        # 2. Ctrl-C in the middle of the second shard: a clean stop that says how to resume.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        code = stop_when(proc, signal.SIGINT, lambda: answered() >= 22, "22 answered calls")
        stderr = (tmp_path / "cli.stderr").read_text()
        assert code == 130, stderr
        assert "interrupted: finished work is kept; run the same command again to resume" in stderr
        assert "Traceback" not in stderr
        segments.append(len(chat_requests(log)))
        assert shards_done() == 1
        assert answered() < PROMPTS * 4  # it stopped instead of finishing the run

        # 3. SIGKILL once every shard is done, while the run writes its data set version.
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        assert stop_when(proc, signal.SIGKILL, lambda: shards_done() == 3, "all shards done") == -signal.SIGKILL
        segments.append(len(chat_requests(log)))

        # 4. The same command finishes the run.
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        segments.append(len(chat_requests(log)))
        requests = chat_requests(log)

    assert "Traceback" not in done.stderr
    assert f"sft        rows {PROMPTS:>6}  failed    0" in done.stdout
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert sorted(r["prompt_id"] for r in rows) == sorted(expected)  # each prompt once
    assert {r["prompt_id"]: r["messages"] for r in rows} == expected
    assert sorted(r["prompt_id"] for r in work_rows(sft, "sft")) == sorted(expected)

    # Each resumed run asked again only what was in flight when the one before it stopped.
    assert len({body_key(r["body"]) for r in requests}) == PROMPTS * 4
    for start, end in zip(segments[1:-1], segments[2:], strict=True):
        answered_before = answered_bodies(requests[:start])
        asked_again = [r for r in requests[start:end] if body_key(r["body"]) in answered_before]
        assert len(asked_again) <= MAX_CONCURRENCY, (segments, start, len(asked_again))
    assert segments[-1] == segments[-2]  # every call was answered before the last kill: none left to ask


@pytest.mark.slow
def test_ctrl_c_from_a_terminal_exits_promptly(tmp_path):
    """A terminal's Ctrl-C reaches the whole job, Prefect's ephemeral API server included."""
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, write_prompts(tmp_path, PROMPTS)))
        proc = start_cli(cfg, cwd=tmp_path, env=cli_env(), new_session=True)  # its own ephemeral API
        try:
            wait_for(lambda: len(chat_requests(srv.log_path)) >= 4, timeout=300, what="4 calls", proc=proc)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = (tmp_path / "cli.stderr").read_text()
    assert code == 130, stderr
    assert stderr.rstrip().endswith("interrupted: finished work is kept; run the same command again to resume")
    assert "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize("flow_first", [False, True], ids=["early-shards", "inside-the-flow"])
def test_sigterm_says_how_to_resume_and_the_same_command_does(tmp_path, prefect_harness, flow_first):
    """SIGTERM once ended with Prefect's 'Crash detected!' and no moaa line saying how to resume.
    With a Prefect server named (PREFECT_API_URL) the flow runs from the start and Prefect's own
    SIGTERM handler sees the signal first; without, the shards begun before Prefect do."""
    prompts = write_prompts(tmp_path, PROMPTS)
    env = cli_env(PREFECT_API_URL=prefect_api_url()) if flow_first else cli_env()
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, prompts))
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        try:
            code = stop_when(proc, signal.SIGTERM, lambda: work_rows(tmp_path / "work", "sft"), "a first row")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = (tmp_path / "cli.stderr").read_text()
        assert code == 143, stderr
        assert stderr.rstrip().endswith(
            "terminated (SIGTERM): finished work is kept; run the same command again to resume"
        )
        assert "Traceback" not in stderr
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    assert len(version_rows(latest_version(tmp_path / "data"), "sft")) == PROMPTS


PRICES = ("endpoints.test.price_input_per_mtok=1.5", "endpoints.test.price_output_per_mtok=6")
TOTALS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost")


def run_totals(work: Path, version: Path) -> dict[str, dict]:
    """The call, token and cost totals of a run as its summary.json and its version's manifest say them."""
    (summary_path,) = work.glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    manifest = json.loads((version / "moaa_manifest.json").read_text())
    stats = manifest["stats"]["test"]
    return {
        "summary": {k: summary[k] for k in TOTALS},
        "manifest summary": {k: manifest["run"]["summary"][k] for k in TOTALS},
        "manifest stats": {k: round(stats[k], 6) if k == "cost" else stats[k] for k in TOTALS},
    }


@pytest.mark.slow
def test_kills_at_every_write_point_resume_to_a_clean_run_and_its_totals(tmp_path, prefect_harness, monkeypatch):
    """SIGKILL mid-shard, then at each point of the version write (MOAA_KILL_AT, moaa.killpoints):
    the same command then ends with the rows of a clean run, its call/token/cost totals, and no
    leftovers; a kill between the rename and LATEST does not make later runs fail."""
    prompts_path = write_prompts(tmp_path, PROMPTS)
    clean = tmp_path / "clean"
    clean.mkdir()
    monkeypatch.chdir(clean)
    with OpenAITestServer() as srv:
        assert run_main("run", str(write_config(clean, srv.base_url, *settings(clean, prompts_path), *PRICES))) == 0
    clean_version = latest_version(clean / "data")
    expected = {r["prompt_id"]: r["messages"] for r in version_rows(clean_version, "sft")}
    expected_totals = run_totals(clean / "work" / "test-run", clean_version)
    assert expected_totals["summary"]["calls"] == PROMPTS * 4 and expected_totals["summary"]["cost"] > 0

    env = cli_env(PREFECT_API_URL=prefect_api_url())
    dataset = tmp_path / "data" / "test-run"
    sft = tmp_path / "work" / "test-run"
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, prompts_path), *PRICES)
        proc = start_cli(cfg, cwd=tmp_path, env=env)  # calls in flight die with it; their answers are cached
        assert stop_when(proc, signal.SIGKILL, lambda: len(work_rows(sft, "sft")) >= 2, "2 rows") == -signal.SIGKILL
        for point in ("data-written", "manifest-written", "renamed"):
            killed = run_cli(cfg, cwd=tmp_path, env=env | {"MOAA_KILL_AT": point})
            assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
            if point != "renamed":
                assert [p.name for p in dataset.iterdir() if p.name.startswith(".tmp-v1-")], point  # left behind
        assert (dataset / "v1").is_dir() and not (dataset / "LATEST").exists()  # killed before LATEST
        done = run_cli(cfg, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in dataset.iterdir()) == ["LATEST", "v1", "v2"]  # no .tmp-v* left
    assert (dataset / "LATEST").read_text() == "v2\n"
    for version in ("v1", "v2"):
        rows = version_rows(dataset / version, "sft")
        assert sorted(r["prompt_id"] for r in rows) == sorted(expected)
        assert {r["prompt_id"]: r["messages"] for r in rows} == expected
    # The killed attempts' calls count once: the totals are the clean run's, not less, not more.
    assert run_totals(sft, dataset / "v2") == expected_totals


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live process below `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = _cmdline(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for PID 1 to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "sigint-to-moaa-alone"])
def test_no_child_outlives_a_killed_run(tmp_path, sig):
    """`moaa run` with its own Prefect API server runs it in its own process (flows.prefect_env.
    LocalAPI): no server child while its shards run, and after kill -9 (or Ctrl-C sent to the
    moaa process only, not its group) it is gone, a Ctrl-C with its usual exit status; the child
    making a new database finishes and exits on its own."""
    prompts = write_prompts(tmp_path, PROMPTS)
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))  # no PREFECT_API_URL: the run starts its own
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *settings(tmp_path, prompts))
        proc = start_cli(cfg, cwd=tmp_path, env=env)
        children: dict[int, str] = {}
        try:
            wait_for(lambda: work_rows(tmp_path / "work", "sft"), timeout=300, what="a first row", proc=proc)
            children = descendants(proc.pid)
            # No Prefect server child (nor any other); on this new PREFECT_HOME at most the child that
            # makes its database (flows.prefect_env._DatabasePrep), which then ends by itself. Prefect's
            # import runs `file -b` once for a few milliseconds (platform.architecture() in its vendored
            # croniter): a snapshot under load may catch it, so a child must still be there a moment later.
            time.sleep(0.5)
            lasting = {pid: line for pid, line in descendants(proc.pid).items() if pid in children}
            assert all(not line or "prepare_database" in line for line in lasting.values()), lasting
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == (130 if sig == signal.SIGINT else -signal.SIGKILL)
            wait_for(lambda: not any(alive(p) for p in children), timeout=120, what="the children to exit")
        finally:
            for pid in children:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)  # do not leak them when the test fails
            if proc.poll() is None:
                proc.kill()
                proc.wait()
