"""Disk full in the output, work or cache folder: one line naming the folder and the error, exit 5,
no traceback; once there is room again the same command finishes with every prompt (nothing lost).

Each folder is a real small tmpfs (needs root to mount; skipped otherwise), filled with a filler
file before or during the run.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.pipeline_helpers import (
    TestServerProcess,
    assert_one_line_error,
    cli_env,
    latest_version,
    prefect_api_url,
    run_cli,
    start_cli,
    version_rows,
    wait_for,
    work_rows,
    write_config,
    write_prompts,
)

PROMPTS = 8


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs at tmp_path/full."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of `folder` until `leave` bytes are free; the filler file."""
    filler = folder / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                st = os.statvfs(folder)
                room = st.f_bavail * st.f_frsize - leave
                if room <= 0:
                    break
                fh.write(b"\0" * min(room, 1 << 16))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["output", "work", "cache"])
def test_a_full_folder_is_one_line_and_nothing_done_is_lost(tmp_path, tmpfs, folder, prefect_harness):
    setting = {"output": "output.root", "work": "run.work_dir", "cache": "cache.path"}[folder]
    target = tmpfs / "cache.sqlite" if folder == "cache" else tmpfs
    env = cli_env(PREFECT_API_URL=prefect_api_url())
    with TestServerProcess(tmp_path / "requests.jsonl", "--latency-ms", "300") as srv:
        overrides = (f"prompts.path={write_prompts(tmp_path, PROMPTS)}", "prompts.limit=null", "run.shard_size=4",
                     "endpoints.test.max_concurrency=2", f"{setting}={target}")  # fmt: skip
        cfg = write_config(tmp_path, srv.base_url, *overrides)
        work = tmpfs if folder == "work" else tmp_path / "work"
        if folder == "output":
            filler = fill(tmpfs, leave=8192)  # room for the writable probe, not for a version
            failed = run_cli(cfg, cwd=tmp_path, env=env)
        else:  # full once the run is answering: rows (work) or answers (cache) can no longer be written
            proc = start_cli(cfg, cwd=tmp_path, env=env)
            wait_for(lambda: work_rows(work, "sft"), timeout=240, what="a first row", proc=proc)
            filler = fill(tmpfs)
            proc.wait(timeout=240)
            failed = (proc.returncode, (tmp_path / "cli.stderr").read_text())
        line = assert_one_line_error(failed, code=5)
        assert line.startswith(f"error: {'cache ' if folder == 'cache' else ''}")
        assert str(tmpfs) in line and f"(or set {setting} to another folder)" in line, line
        assert "No space left on device (ENOSPC)" in line or "database or disk is full" in line, line
        assert line.endswith("then run the same command again: finished work is kept")
        kept = len(work_rows(work, "sft"))
        filler.unlink()
        done = run_cli(cfg, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert kept >= 1
    ids = [r["prompt_id"] for r in version_rows(latest_version(tmpfs if folder == "output" else tmp_path / "data"),
                                                 "sft")]  # fmt: skip
    assert len(ids) == len(set(ids)) == PROMPTS
