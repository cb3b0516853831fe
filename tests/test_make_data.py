"""`make data`'s job on the real embedded model, shrunk: the local preset through the CLI, from
server start to a loadable data set version and the printed summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_local_preset_makes_sft_rows_and_a_summary(tmp_path):
    from datasets import load_dataset

    overrides = [
        "prompts.limit=1", "preference.limit=1", "preference.samples=2",
        "endpoints.local.sampling.max_tokens=48", "sft.aggregator.max_tokens=64",
        "preference.policy.max_tokens=48", "preference.min_margin=0",
        f"output.root={tmp_path / 'data'}", f"run.work_dir={tmp_path / 'work'}",
        f"cache.path={tmp_path / 'cache.sqlite'}",
    ]
    cmd = [sys.executable, "-m", "moaa.cli", "run", "configs/local.yaml"]
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "moaa run 'local-moa' finished" in out and "per prompt (moa): 4.0 calls" in out
    assert "tok/s" in out and "endpoint local:" in out

    version = tmp_path / "data" / "local-moa" / "v1"
    sft = load_dataset(str(version), "sft")
    rows = [row for split in sft.values() for row in split]
    assert len(rows) == 1
    answer = rows[0]["messages"][-1]
    assert answer["role"] == "assistant" and answer["content"].strip()
    assert rows[0]["models"] == ["qwen2.5-coder-0.5b-instruct"]
    trace = load_dataset(str(version), "trace")
    kinds = [k for split in trace.values() for k in split["kind"]]
    assert kinds.count("proposal") == 3 and kinds.count("aggregate") == 1
    assert (version / "moaa_manifest.json").exists()
    report = (version / "report.md").read_text()
    assert "## Scores" in report or "Scores" in report
    pngs = sorted((version / "report").glob("*.png"))
    assert {p.stem for p in pngs} >= {"lengths", "calls"}
    for png in pngs:  # real images with data: PNG magic bytes and a non-trivial plot
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
