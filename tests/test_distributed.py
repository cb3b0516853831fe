"""The pipeline flow on a Dask cluster of worker processes gives the rows of a single-process run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.task_runners import make_task_runner
from moaa.config import RunSettings, apply_override
from moaa.work.shards import read_jsonl
from tests.conftest import base_raw


@pytest.fixture(scope="module")
def server_url():
    """The OpenAI test server as a subprocess (Dask workers in other processes reach it too)."""
    cmd = [sys.executable, "-m", "moaa.testing.openai_server", "--latency-ms", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    yield line.split()[1]
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def write_config(folder: Path, url: str, *overrides: str) -> Path:
    raw = base_raw(folder, url)
    for item in ("prompts.limit=8", "run.shard_size=2", "cache.enabled=false", *overrides):
        apply_override(raw, item)
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_flow(config_path: Path) -> dict:
    from flows.pipeline_flow import moaa_pipeline, task_runner_for
    from moaa.config import load_config

    runner = task_runner_for(load_config(config_path))
    return moaa_pipeline.with_options(task_runner=runner)(str(config_path))


def sft_rows(summary: dict) -> dict[str, str]:
    """prompt_id -> the final answer, from every shard of the run's work folder."""
    rows = [r for p in sorted(Path(summary["work_dir"]).glob("sft/shard-*/rows.jsonl")) for r in read_jsonl(p)]
    answers = {r["prompt_id"]: r["messages"][-1]["content"] for r in rows}
    assert len(answers) == len(rows)
    return answers


def test_dask_runner_settings():
    local = make_task_runner(RunSettings(task_runner="dask", workers=3))
    assert local.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 1, "processes": True}
    assert make_task_runner(RunSettings(task_runner="dask", address="tcp://10.0.0.5:8786")).address == (
        "tcp://10.0.0.5:8786"
    )


@pytest.mark.slow
def test_sft_on_a_dask_cluster_of_two_processes_matches_one_process(tmp_path, server_url, prefect_harness):
    from distributed import Client, LocalCluster, get_task_stream

    single = run_flow(write_config(tmp_path / "single", server_url))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config = write_config(tmp_path / "dask", server_url, "run.task_runner=dask",
                              f"run.address={cluster.scheduler_address}")  # fmt: skip
        with Client(cluster) as client, get_task_stream(client=client) as stream:
            distributed = run_flow(config)
    workers = {task["worker"] for task in stream.data if str(task["key"]).startswith("stage_shard-")}
    assert len(workers) == 2  # both worker processes ran shards
    assert distributed["stages"]["sft"]["rows"] == single["stages"]["sft"]["rows"] == 8
    assert sft_rows(distributed) == sft_rows(single)
    assert distributed["calls"] == single["calls"] == 8 * 4


@pytest.mark.slow
def test_prefect_rate_limit_paces_the_requests_of_every_shard(tmp_path, server_url, prefect_harness):
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.pipeline_flow import stage_shard
    from flows.rate_limits import use_prefect_rate_limits
    from moaa.config import load_config
    from moaa.work.run_plan import plan_run
    from moaa.work.stage_shard import ShardJob

    config = load_config(write_config(tmp_path, server_url, "prompts.limit=2"))  # one shard, 2 x 4 calls
    ((shard, out),) = plan_run(config).shards["sft"]

    def run_shard_seconds(folder: str) -> float:
        start = time.perf_counter()
        stage_shard.fn(ShardJob("sft", config, shard, out.with_name(folder)))
        return time.perf_counter() - start

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="moaa-test", limit=1, slot_decay_per_second=4.0)
        )
        try:
            assert use_prefect_rate_limits(config) == ["moaa-test"]
            paced = run_shard_seconds("paced")
        finally:
            client.delete_global_concurrency_limit_by_name("moaa-test")
    assert use_prefect_rate_limits(config) == []
    free = run_shard_seconds("free")
    assert paced >= 7 / 4 * 0.9  # 8 requests, one slot decaying at 4/s: at least ~1.75 s
    assert free < paced


def ray_processes() -> dict[int, str]:
    """Every process on this machine whose command line is Ray's (its node, agents and workers)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X") and ("ray/" in cmd or "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd):
                found[int(proc.name)] = cmd[:160]
    return found


@pytest.mark.slow
def test_sft_on_a_local_ray_node_matches_one_process(tmp_path, server_url, prefect_harness):
    pytest.importorskip("prefect_ray", reason="the ray extra (pip install 'moaa[ray]'; make setup installs it)")
    single = run_flow(write_config(tmp_path / "single", server_url))
    on_ray = run_flow(write_config(tmp_path / "ray", server_url, "run.task_runner=ray", "run.workers=2"))
    assert on_ray["stages"]["sft"]["rows"] == single["stages"]["sft"]["rows"] == 8
    assert sft_rows(on_ray) == sft_rows(single)
    assert on_ray["calls"] == single["calls"] == 8 * 4


@pytest.mark.slow
def test_kill_9_of_a_run_on_ray_leaves_no_ray_process_and_resumes_exactly(tmp_path, server_url, prefect_harness):
    """`moaa run` on its local Ray node, killed while its shards run: every Ray process (node, agents,
    workers) is gone within seconds, and the same command completes with the rows of a clean run."""
    pytest.importorskip("prefect_ray", reason="the ray extra (pip install 'moaa[ray]'; make setup installs it)")
    import time

    from tests.pipeline_helpers import cli_env, latest_version, run_cli, start_cli, version_rows, wait_for

    before = set(ray_processes())
    clean = sft_rows(run_flow(write_config(tmp_path / "clean", server_url, "prompts.limit=16")))
    slow = subprocess.Popen([sys.executable, "-m", "moaa.testing.openai_server", "--latency-ms", "400"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    url = slow.stdout.readline().split()[1]
    cfg = write_config(tmp_path, url, "run.task_runner=ray", "run.workers=2", "prompts.limit=16")
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    proc = start_cli(cfg, cwd=tmp_path, env=env)
    rows_files = lambda: [p for p in tmp_path.glob("work/**/sft/shard-*/rows.jsonl") if p.stat().st_size]  # noqa: E731
    try:
        wait_for(rows_files, timeout=300, what="a first row from a Ray worker", proc=proc)
        mine = {pid: cmd for pid, cmd in ray_processes().items() if pid not in before}
        assert any("raylet" in cmd for cmd in mine.values()), mine
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 60
        while (left := {p: c for p, c in ray_processes().items() if p in mine}) and time.monotonic() < deadline:
            time.sleep(1)
        assert left == {}, f"Ray processes outlived the killed run: {left}"
        done = run_cli(cfg, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        slow.terminate()
        slow.wait(10)
    left = {p: c for p, c in ray_processes().items() if p not in before}
    assert left == {}, f"the run that finished left Ray processes behind: {left}"
    version = latest_version(tmp_path / "data")
    assert {r["prompt_id"]: r["messages"][-1]["content"] for r in version_rows(version, "sft")} == clean
