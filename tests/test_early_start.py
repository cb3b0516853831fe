"""Start-up: `moaa run` begins its first shards while Prefect's API server starts, and the flow's
task runs join them (moaa.work.launch, moaa.work.stage_shard.begin_shard, flows.prefect_env)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from moaa.config import load_config
from moaa.locks import FolderBusy, FolderLock
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.launch import begin_early, open_run
from moaa.work.run_plan import plan_run
from moaa.work.shards import read_done
from moaa.work.stage_shard import RunStopped, ShardHooks, ShardJob, begin_shard, run_shard
from tests.pipeline_helpers import (
    TestServerProcess,
    assert_one_line_error,
    chat_requests,
    cli_env,
    latest_version,
    run_cli,
    version_rows,
    write_config,
    write_prompts,
)

PROMPTS = 12


def _settings(prompts: Path) -> list[str]:
    return [f"prompts.path={prompts}", "prompts.limit=null", "run.shard_size=4", "run.max_parallel_shards=2"]


def _one_shard(tmp_path: Path, base_url: str) -> tuple:
    config = load_config(write_config(tmp_path, base_url, *_settings(write_prompts(tmp_path, 4))))
    plan = plan_run(config, base_dir=tmp_path)
    (inp, out), *_ = plan.shards["sft"]
    return ShardJob("sft", config, inp, out), out


def _free(folder: Path) -> None:
    lock = FolderLock(folder, "shard folder")
    lock.acquire(wait=False)  # raises FolderBusy while a shard holds it
    lock.release()


def test_a_begun_shard_is_joined_not_run_twice(tmp_path):
    with OpenAITestServer() as srv:
        job, out = _one_shard(tmp_path, srv.base_url)
        begun = begin_shard(job, ShardHooks(), lean=True)
        with pytest.raises(FolderBusy):
            FolderLock(out, "shard folder").acquire(wait=False)  # the begun shard holds its folder
        hooks = ShardHooks(begun=begun)
        result = run_shard(job, hooks)
        assert hooks.begun is None  # joined once: a retried task would start the shard again
        asked = len(srv.requests)
    assert result.counts.rows == 4 and not result.skipped
    assert asked == 4 * 4  # 3 proposers + aggregator per prompt, each asked once
    _free(out)  # released once joined
    # Held until the flow joins it, the begun shard's result carries no accounting; DONE has it all.
    assert result.stats == {} and result.attempt_stats == {}
    assert sum(e["calls"] for e in read_done(out).stats["endpoints"].values()) == asked


def test_a_begun_shard_nobody_takes_is_stopped_and_its_folder_released(tmp_path):
    with OpenAITestServer(latency_s=0.2) as srv:
        job, out = _one_shard(tmp_path, srv.base_url)
        stop = threading.Event()
        begun = begin_shard(job, ShardHooks(stop=stop), lean=True)
        stop.set()  # what StageRun.abandon does when Prefect's API never came up, then it waits
        with pytest.raises(RunStopped):
            begun.wait()
        _free(out)
        with pytest.raises(RunStopped):
            run_shard(job, ShardHooks(stop=stop))  # not begun again: the run is stopping


def _open_one_at_a_time(tmp_path: Path, base_url: str):
    """The run of 12 prompts in 3 shards of 4, opened with one shard at a time."""
    prompts = write_prompts(tmp_path, PROMPTS)
    config = load_config(write_config(tmp_path, base_url, *_settings(prompts), "run.max_parallel_shards=1"))
    return open_run(config, base_dir=tmp_path)


def test_each_shard_begun_early_begins_the_next_as_it_ends(tmp_path):
    with OpenAITestServer(latency_s=0.02) as srv, _open_one_at_a_time(tmp_path, srv.base_url) as opened:
        run = begin_early(opened)
        assert len(run.begun) == 1  # one at a time...
        deadline = time.monotonic() + 60
        while not all((job.out / "DONE").exists() for job in run.jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.begun == [str(job.out) for job in run.jobs]  # ...and the next as each ended
        taken = opened.take_early("sft")
        results = [run_shard(job, taken.hooks_for(job)) for job in taken.jobs]  # the tasks join
        taken.close()
        asked = len(srv.requests)
    assert [r.counts.rows for r in results] == [4, 4, 4] and asked == PROMPTS * 4  # none asked twice


def test_waiting_for_the_shards_begun_early_returns_once_every_one_is_done(tmp_path):
    """What `moaa run` waits for before it starts its own Prefect API server (StageRun.wait_begun)."""
    with OpenAITestServer(latency_s=0.05) as srv, _open_one_at_a_time(tmp_path, srv.base_url) as opened:
        run = begin_early(opened)
        run.wait_begun(poll_s=0.05)
        assert [(job.out / "DONE").exists() for job in run.jobs] == [True, True, True]
        assert run.begun == [str(job.out) for job in run.jobs] and len(srv.requests) == PROMPTS * 4
        opened.take_early("sft").close()


def test_waiting_for_the_shards_begun_early_ends_when_the_run_stops(tmp_path):
    """A stopped shard (Ctrl-C, a run-fatal error) ends with an error and begins no next one: the
    wait ends there instead of waiting for shards that will never begin."""
    with OpenAITestServer(latency_s=0.3) as srv, _open_one_at_a_time(tmp_path, srv.base_url) as opened:
        run = begin_early(opened)
        done = threading.Event()
        threading.Thread(target=lambda: (run.wait_begun(poll_s=0.05), done.set()), daemon=True).start()
        time.sleep(0.5)
        assert not done.is_set()  # the first shard is still running
        run.stop.set()
        assert done.wait(60), "wait_begun did not return after the run stopped"
        assert len(run.begun) == 1 and not (run.jobs[0].out / "DONE").exists()
        opened.take_early("sft").close()


def test_the_flow_taking_the_stage_over_ends_the_chain(tmp_path):
    with OpenAITestServer(latency_s=0.02) as srv, _open_one_at_a_time(tmp_path, srv.base_url) as opened:
        run = begin_early(opened)
        assert opened.take_early("sft") is run and opened.early is None
        job, *rest = run.jobs
        assert run_shard(job, run.hooks_for(job)).counts.rows == 4  # joined
        time.sleep(0.5)  # the chain would have begun the next shard by now
        assert run.begun == [str(job.out)] and not any((later.out / "rows.jsonl").exists() for later in rest)
        run.close()


def _prefect_runs(db: Path) -> tuple[datetime, list[str]]:
    """The newest flow run's creation time and its task runs' states."""
    with sqlite3.connect(db) as conn:
        run_id, created = conn.execute("select id, created from flow_run order by created desc limit 1").fetchone()
        states = [s for (s,) in conn.execute("select state_type from task_run where flow_run_id = ?", (run_id,))]
    return datetime.fromisoformat(created), states


@pytest.mark.slow
def test_first_calls_go_out_before_the_flow_run_exists_and_its_tasks_join_them(tmp_path):
    """With its own Prefect API (no PREFECT_API_URL), the run's first model call is sent while
    that server is still starting, before the flow run is created, and as a begun shard ends the
    next begins (3 shards, 2 at a time: all done before the flow run exists, not only the first
    two); the flow still has one completed task run per shard, and the rows are complete and not
    doubled."""
    prompts = write_prompts(tmp_path, PROMPTS)
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "50") as srv:
        cfg = write_config(tmp_path, srv.base_url, *_settings(prompts))
        proc = run_cli(cfg, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    calls = chat_requests(tmp_path / "requests.jsonl")
    assert len(calls) == PROMPTS * 4
    created, states = _prefect_runs(tmp_path / "prefect" / "prefect.db")
    assert min(r["t"] for r in calls) < created.timestamp()  # sent before Prefect's flow run existed
    assert max(r["t"] for r in calls) < created.timestamp()  # the third shard too: no wait for Prefect
    assert states == ["COMPLETED"] * 3  # 12 prompts in shards of 4: every shard a visible task run
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert len(rows) == len({r["prompt_id"] for r in rows}) == PROMPTS


@pytest.mark.slow
def test_a_prefect_api_that_does_not_start_stops_the_begun_shards_and_loses_nothing(tmp_path):
    prompts = write_prompts(tmp_path, PROMPTS)
    no_db = f"sqlite+aiosqlite:///{prompts}/no/such/prefect.db"  # under a file: the server cannot start
    broken = cli_env(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_DATABASE_CONNECTION_URL=no_db)
    broken.pop("PREFECT_API_URL", None)
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        cfg = write_config(tmp_path, srv.base_url, *_settings(prompts))
        failed = run_cli(cfg, cwd=tmp_path, env=broken)
        line = assert_one_line_error(failed)
        assert "Prefect's local API server" in line and "full log:" in line, line
        assert not (tmp_path / "data" / "test-run" / "LATEST").exists()
        good = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
        good.pop("PREFECT_API_URL", None)
        again = run_cli(cfg, cwd=tmp_path, env=good)
    assert again.returncode == 0, again.stderr
    rows = version_rows(latest_version(tmp_path / "data"), "sft")
    assert len(rows) == len({r["prompt_id"] for r in rows}) == PROMPTS


def test_the_local_api_server_loads_no_prefect_integration():
    """The server's block registration imports every `prefect.collections` entry point first (here
    prefect-dask: dask, distributed, numpy; ~26 MiB of the server). flows.prefect_env._server_app
    leaves them unloaded; the Dask task runner itself still loads prefect-dask in the run."""
    import json
    import subprocess
    import sys
    from importlib.metadata import entry_points

    assert "prefect_dask" in {ep.name for ep in entry_points(group="prefect.collections")}
    code = (
        "import json, sys\n"
        "from flows.prefect_env import _server_app\n"
        "app = _server_app()\n"
        "from prefect.plugins import load_prefect_collections\n"
        "print(json.dumps([sorted(load_prefect_collections()), 'distributed' in sys.modules, type(app).__name__]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[], False, "FastAPI"]


@pytest.mark.slow
def test_the_local_api_server_runs_in_this_process_and_stops_before_exit(tmp_path):
    """flows.prefect_env.ensure_api with no PREFECT_API_URL: Prefect's server answers from a thread
    of this process (no child process), and stop_api ends that thread and closes its port (at
    exit instead, its workers would find their thread pools shut down and spin)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, os, socket, threading, urllib.request\n"
        "from pathlib import Path\n"
        "from flows.prefect_env import ensure_api, stop_api\n"
        "url = ensure_api()\n"
        "health = urllib.request.urlopen(url + '/health', timeout=10).status\n"
        "kids = [p.name for p in Path('/proc').iterdir() if p.name.isdigit() and\n"
        "        (p / 'stat').exists() and (p / 'stat').read_text().rsplit(')', 1)[1].split()[1] == str(os.getpid())]\n"
        "serving = [t.name for t in threading.enumerate() if t.name == 'moaa-prefect-api']\n"
        "stop_api()\n"
        "port = int(url.rsplit(':', 1)[1].split('/')[0])\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', port), timeout=2).close(); closed = False\n"
        "except OSError:\n"
        "    closed = True\n"
        "left = [t.name for t in threading.enumerate() if t.name == 'moaa-prefect-api']\n"
        "print(json.dumps([health, kids, serving, left, closed, 'PREFECT_API_URL' in os.environ]))\n"
    )
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [200, [], ["moaa-prefect-api"], [], True, False]


_PREP_SCRIPT = (
    "import json, os, sys, threading, time, urllib.request\n"
    "from pathlib import Path\n"
    "import flows.prefect_env as pe\n"
    "{patch}"
    "home, released, got = Path(os.environ['PREFECT_HOME']), threading.Event(), {{}}\n"
    "start = pe._DatabasePrep.start_if_new\n"
    "pe._DatabasePrep.start_if_new = lambda logs: got.setdefault('prep', start(logs))\n"
    "thread = threading.Thread(target=lambda: got.update(url=pe.ensure_api(released=released)))\n"
    "thread.start()\n"
    "deadline = time.monotonic() + 180\n"
    "while time.monotonic() < deadline and ('prep' not in got or (got['prep'] and got['prep'].proc.poll() is None)):\n"
    "    time.sleep(0.05)\n"
    "memo = home / 'memo_store.toml'\n"
    "made = [(home / 'prefect.db').exists(), memo.exists() and 'block_auto_registration' in memo.read_text()]\n"
    "before = made + ['url' in got, got['prep'] and got['prep'].proc.returncode]\n"
    "released.set(); thread.join(180)\n"
    "health = urllib.request.urlopen(got['url'] + '/health', timeout=10).status\n"
    "pe.stop_api()\n"
    "logs = sorted(p.name.split('-')[1] for p in (Path(os.environ['MOAA_HOME']) / 'logs').glob('prefect-*.log'))\n"
    "print(json.dumps([before, health, logs]))\n"
)


def _prep_run(tmp_path: Path, patch: str = "") -> list:
    import json
    import subprocess
    import sys

    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"), MOAA_HOME=str(tmp_path / "moaa-home"))
    env.pop("PREFECT_API_URL", None)
    code = _PREP_SCRIPT.format(patch=patch)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_new_database_is_made_by_a_child_before_the_server_is_released(tmp_path):
    """On a new PREFECT_HOME, ensure_api has a child create the database and register the block
    types while the caller still holds the server back (its early shards), so the server in this
    process starts on a ready one; the child's log goes with its success."""
    before, health, logs = _prep_run(tmp_path)
    assert before == [True, True, False, 0]  # made by the child, and the server not yet started
    assert health == 200
    assert logs == []


@pytest.mark.slow
def test_a_failed_database_child_leaves_the_server_to_make_it(tmp_path):
    """A child that fails (here: exits 3 at once) costs nothing but its log: the server in this
    process migrates the new database itself, as it did before the child existed."""
    patch = (
        "import subprocess\n"
        "real = subprocess.Popen\n"
        "subprocess.Popen = lambda args, **kw: real([sys.executable, '-c', 'raise SystemExit(3)'], **kw)\n"
    )
    before, health, logs = _prep_run(tmp_path, patch)
    assert before == [False, False, False, 3]  # nothing was made before the release
    assert health == 200
    assert logs == ["db"]  # the failed child's log stays; the server's own went with its clean stop


def test_server_and_database_logs_of_killed_runs_go_after_a_day(tmp_path):
    """A run killed before its clean stop leaves its server's and its database child's logs; the
    next run that starts a server removes those over a day old, and nothing else."""
    import os

    from flows.prefect_env import _drop_stale_logs

    names = ["prefect-api-1.log", "prefect-db-1.log", "prefect-api-2.log", "prefect-db-2.log", "setup-smoke.log"]
    for name in names:
        (tmp_path / name).write_text("x")
    old = time.time() - 2 * 86400
    for name in ("prefect-api-1.log", "prefect-db-1.log", "setup-smoke.log"):
        os.utime(tmp_path / name, (old, old))
    _drop_stale_logs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefect-api-2.log", "prefect-db-2.log", "setup-smoke.log"]


@pytest.mark.slow
def test_a_database_child_that_cannot_start_leaves_the_server_to_make_it(tmp_path):
    """No child at all (Popen raises OSError): no log left, and the server migrates the database."""
    patch = (
        "import subprocess\n"
        "def refuse(*args, **kw):\n"
        "    raise OSError(24, 'Too many open files')\n"
        "subprocess.Popen = refuse\n"
    )
    before, health, logs = _prep_run(tmp_path, patch)
    assert before == [False, False, False, None]
    assert health == 200
    assert logs == []


def test_the_flow_runs_on_the_open_run_without_loading_the_config_again(tmp_path):
    """`moaa run` opens the run once and hands it to the flow by its run id: the flow never reads the
    YAML again (here the file is broken after the run was opened, and the run still writes its
    version from the config it was opened with)."""
    from flows.pipeline_flow import run_flow

    prompts = write_prompts(tmp_path, 4)
    with OpenAITestServer() as srv:
        path = write_config(tmp_path, srv.base_url, *_settings(prompts))
        with open_run(load_config(path), base_dir=tmp_path) as opened:
            path.write_text("sft: [this is not a config\n", encoding="utf-8")
            summary = run_flow(opened, str(path), ["prompts.limit=null"])
    assert summary["stages"]["sft"]["rows"] == 4 and Path(summary["version_path"]).is_dir()


def test_a_flow_given_a_run_id_this_process_has_not_opened_stops_with_one_line(tmp_path):
    from flows.pipeline_flow import moaa_pipeline
    from moaa.errors import MoaaError

    with pytest.raises(MoaaError) as err:
        moaa_pipeline(str(tmp_path / "config.yaml"), [], run_id="0123abcd")
    line = str(err.value)
    assert "\n" not in line and "0123abcd" in line and "not open in this process" in line
    assert "run the same `moaa run` command again" in line
