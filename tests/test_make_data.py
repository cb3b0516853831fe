"""`make data`'s job on the real embedded model, shrunk: the local preset through the CLI, from
server start to a loadable data set version and the printed summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from moaa.dataset.run_report import SECTIONS
from tests.conftest import ROOT


@pytest.mark.slow
def test_local_preset_makes_its_rows_and_a_summary(tmp_path):
    """The preset exactly as `make data` runs it (only the output folders moved): 4 SFT rows, at least
    one DPO pair for every two preference prompts, verdicts that parse, answers that finish."""
    import polars as pl

    overrides = [
        f"output.root={tmp_path / 'data'}", f"run.work_dir={tmp_path / 'work'}",
        f"cache.path={tmp_path / 'cache.sqlite'}",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "moaa.cli", "run", "configs/local.yaml"]
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "moaa run 'local-moa' finished" in out
    per_prompt = re.search(r"per prompt \(moa\): ([\d.]+) calls", out)
    assert per_prompt and float(per_prompt.group(1)) >= 4.0, out  # 3 proposers + 1 aggregate (+ gate re-asks)
    assert "tok/s" in out and "endpoint local:" in out
    assert "  quality: sft " in out and " unparsed verdicts" in out

    version = tmp_path / "data" / "local-moa" / "v1"
    sft = _rows(version, "sft")
    assert len(sft) == 4, f"{4 - len(sft)} prompts failed (a quality_* reason: the gates dropped them)"
    for row in sft:
        answer = row["messages"][-1]
        assert answer["role"] == "assistant" and answer["content"].strip()
        assert not re.search(r"\bResponse\s+\d+\s*:", answer["content"]), answer["content"]  # no scaffolding
        assert row["models"] == ["qwen2.5-coder-0.5b-instruct"]
    dpo = _rows(version, "dpo")
    assert len(dpo) >= 2, "fewer than one DPO pair per two preference prompts"  # preference.limit is 4
    assert all(r["score_chosen"] > r["score_rejected"] for r in dpo)
    trace = _rows(version, "trace")
    kinds = [r["kind"] for r in trace]
    kept = [r for r in trace if r["kind"] == "aggregate" and r["selected"]]  # a re-asked one is not kept
    assert kinds.count("proposal") == 12 and len(kept) == 4
    verdicts = [r for r in trace if r["kind"] == "verdict"]
    assert len(verdicts) >= 8 and all(r["score"] is not None for r in verdicts)  # every verdict parsed
    answers = [r for r in trace if r["kind"] in ("proposal", "aggregate", "sample")]
    truncated = [r for r in answers if r["finish_reason"] == "length"]
    assert len(truncated) <= len(answers) // 10, f"{len(truncated)} of {len(answers)} answers truncated"
    assert pl.read_parquet(next((version / "data" / "sft").glob("*.parquet"))).height >= 1
    assert (version / "moaa_manifest.json").exists()
    report = (version / "report.md").read_text()
    for section in SECTIONS:  # the report of a real local-model version has every section
        assert f"\n## {section}\n" in report, section
    pngs = sorted((version / "report").glob("*.png"))
    assert {p.stem for p in pngs} >= {"lengths", "calls"}
    for png in pngs:  # real images with data: PNG magic bytes and a non-trivial plot
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def _rows(version, config: str) -> list[dict]:
    from datasets import load_dataset

    loaded = load_dataset(str(version), config)
    return [row for split in loaded.values() for row in split]
