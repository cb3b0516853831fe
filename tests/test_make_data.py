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
from tests.verify_helpers import recheck


@pytest.mark.slow
def test_local_preset_makes_its_rows_and_a_summary(tmp_path):
    """The preset exactly as `make data` runs it (only the output folders moved): each of the 6 prompts
    an SFT row or an `unverified` (or `truncated`) failure, at least one DPO pair (the mixture's SFT
    answer is a candidate, so a prompt whose policy samples all fail still pairs where the mixture
    passed), no row and no DPO chosen side that fails its
    prompt's reference (checked again here, apart from the pipeline's verdicts), verdicts that parse,
    answers that finish."""
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
    # llama.cpp's batched decoding is not bit-for-bit repeatable (a slot's numbers depend on what
    # shares its batch), so a run may cut an answer at max_tokens: that prompt is a named `truncated`
    # failure, asked again by the next run, and not checked
    assert re.search(r"verification \(sft\): moa: [1-4] prompts checked, \d+ verified", out), out

    version = tmp_path / "data" / "local-moa" / "v1"
    references = _references()
    sft = _rows(version, "sft")
    failed = _rows(version, "failures")
    named = {
        "unverified",
        "truncated",
        "quality_scaffolding",
        "quality_verbatim_copy",
    }  # every prompt a row or one of these
    # the SFT stage's count: a prompt the preference stage also fails (a policy sample cut at max_tokens) is
    # a failure of that stage, one more named row beside its SFT row or SFT failure
    sft_failed = [f for f in failed if f["stage"] == "sft"]
    assert len(sft) + len(sft_failed) == 6 and {f["reason"] for f in failed} <= named, failed
    for row in sft:
        answer = row["messages"][-1]
        assert answer["role"] == "assistant" and answer["content"].strip()
        assert not re.search(r"\bResponse\s+\d+\s*:", answer["content"]), answer["content"]  # no scaffolding
        assert row["models"] == ["qwen2.5-coder-0.5b-instruct"]
        assert recheck(references[row["prompt_id"]], answer["content"]) in ("pass", "none"), row  # the hidden check
    dpo = _rows(version, "dpo")
    assert dpo, "no DPO pair"
    for pair in dpo:  # a pair is a right answer over a wrong one, or the judge's among right ones
        assert recheck(references[pair["prompt_id"]], pair["chosen"][0]["content"]) in ("pass", "none"), pair
    trace = _rows(version, "trace")
    kinds = [r["kind"] for r in trace]
    assert kinds.count("audit") == len(dpo)  # preference.pair_audit: every written pair compared head to head
    assert f"comparisons of {len(dpo)} pairs; ties " in out and " by log-probabilities; rejected ranked first " in out
    assert "; a wrong answer first (of " in out  # the pairs whose rejected side failed its check
    kept = [r for r in trace if r["kind"] == "aggregate" and r["selected"]]  # a re-asked or failed one is not kept
    assert kinds.count("proposal") == 18 and len(kept) <= 6
    assert kinds.count("verification") >= 4  # every final answer's verdict, and the re-asks' and proposals'
    verdicts = [r for r in trace if r["kind"] == "verdict" and r["role"] == "judge"]
    assert all(r["score"] is not None for r in verdicts if r["agent"] != "verifier")  # every judge verdict parsed
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


def _references() -> dict:
    """prompt_id -> Reference of default.jsonl's rows (read here, not from the pipeline's prompts)."""
    import json

    from moaa.rows import Reference, prompt_id_of

    out = {}
    for line in (ROOT / "configs/prompts/default.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        out[prompt_id_of(messages)] = Reference.from_dict(row.get("reference") or {})
    return out


def _rows(version, config: str) -> list[dict]:
    from datasets import load_dataset

    loaded = load_dataset(str(version), config)
    return [row for split in loaded.values() for row in split]
