"""The `data` benchmark: the preset run whole (`moaa run` in a process of its own) on each runtime, side
by side, every arm with its own output, work folder and cache; here two test servers stand in for the
runtimes (one answering 0.3 s slower), so the arms' plumbing and figures are checked, not their speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.bench_data import OLD, Arm, arm_overrides, figures, measure
from moaa.config import load_config
from moaa.local.model import LOCAL_MODEL_NAME
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import ROOT
from tests.pipeline_helpers import cli_env, prefect_api_url, verdict_responder

PRESET = ROOT / "configs/local.yaml"
BASELINE = ROOT / "benchmarks/runtime_baseline.yaml"  # the README's `--config` for the runtime issue's baseline work


def test_an_arm_runs_the_preset_unchanged_but_for_its_folders_and_its_server(tmp_path: Path):
    raw = load_config(PRESET)
    embedded = load_config(PRESET, arm_overrides(raw, tmp_path / "a", None, None))
    assert embedded.endpoints == raw.endpoints and embedded.sft == raw.sft
    assert embedded.output == raw.output.model_copy(update={"root": str(tmp_path / "a/data")})
    assert embedded.run.work_dir == str(tmp_path / "a/work")
    assert embedded.cache.path == str(tmp_path / "a/cache.sqlite")

    served = load_config(PRESET, arm_overrides(raw, tmp_path / "b", "http://127.0.0.1:9/v1", 3))
    local = served.endpoints["local"]
    assert not local.local and local.base_url == "http://127.0.0.1:9/v1" and local.model == LOCAL_MODEL_NAME
    preset = raw.endpoints["local"]
    assert (local.timeout_s, local.sampling) == (preset.timeout_s, preset.sampling)
    assert served.sft == raw.sft and served.preference.scorer == raw.preference.scorer
    assert served.prompts.limit == served.preference.limit == 3
    assert load_config(PRESET).endpoints["local"].local is True  # the preset itself is untouched
    # what moaa gives its embedded server, given to the old one: llama.cpp's schema shape, n seeded requests
    assert (local.json_schema_style, local.supports_n, local.max_concurrency) == ("llama.cpp", False, 4)


def test_the_runtime_baseline_is_the_4_unchecked_prompts_the_runtime_issue_timed():
    base, today = load_config(BASELINE), load_config(PRESET)
    assert base.endpoints == today.endpoints and base.sft.method == today.sft.method == "moa"
    assert [p.name for p in base.sft.proposers] == ["precise", "teacher", "creative"]
    assert base.prompts.limit == base.preference.limit == 4 and base.prompts.path == today.prompts.path
    assert base.sft.verify.mode == "off" and base.preference.verify == "off"  # nothing checked
    pref = base.preference
    assert not pref.include_sft_answer and not pref.pair_audit
    assert pref.scorer.kind == "pointwise" and not pref.scorer.rationales
    assert [judge.max_tokens for judge in pref.scorer.judges] == [48]


@pytest.mark.slow
def test_each_arm_runs_the_whole_preset_on_its_own_server_and_is_timed_against_the_old_runtime(
    tmp_path: Path, prefect_harness, monkeypatch, capsys
):
    for name, value in cli_env(PREFECT_API_URL=prefect_api_url()).items():
        monkeypatch.setenv(name, value)
    raw = yaml.safe_load(PRESET.read_text())
    prompts = tmp_path / "prompts.jsonl"
    texts = ["Explain tides to a child in two sentences.", "Give three tips for a first marathon."]
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)))
    raw["prompts"] = {"path": str(prompts)}
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(raw))
    logs = {key: tmp_path / f"{key}.requests.jsonl" for key in ("new", OLD)}
    with (
        OpenAITestServer(responder=verdict_responder, log_path=logs["new"]) as new,
        OpenAITestServer(responder=verdict_responder, latency_s=0.3, log_path=logs[OLD]) as old,
    ):
        broken = Arm("broken", "a runtime that dies", env=(("MOAA_LLAMA_SERVER", "/bin/false"),))  # exits at once
        arms = [Arm("new", "new runtime", base_url=new.base_url), broken,
                Arm(OLD, "old runtime", base_url=old.base_url, startup_s=1000.0)]  # fmt: skip
        results = measure(tmp_path / "work", preset, arms)

    requests = {key: len(path.read_text().splitlines()) for key, path in logs.items()}
    # each arm asked its own server for the whole run: no arm answered from another's cache
    assert requests["new"] == requests[OLD] == results["new"]["calls"] == results[OLD]["calls"] > 10
    for key in ("new", OLD):
        got = results[key]
        assert got["exit"] == 0 and got["sft_rows"] == 2 and got["pairs"] >= 1, got
        assert got["version"].startswith(str(tmp_path / "work" / key / "data")), got
        assert got["seconds"] >= got["moaa_seconds"] > 0
    # the old server's start-up (here a stand-in 1,000 s) is part of its arm's time; moaa's own is inside the run
    assert 1000 + results[OLD]["moaa_seconds"] <= results[OLD]["seconds"] < 1000 + results["new"]["seconds"] + 60

    # the broken arm is one named failure; the arm after it still ran
    assert "local model server" in results["broken"]["error"] and "Traceback" not in results["broken"]["error"]

    figs = figures(arms, results, 2)
    names = [f.name for f in figs]
    assert names == ["new runtime: make data's preset", "new runtime: tokens written per second over the run",
                     "a runtime that dies: make data's preset", "old runtime: make data's preset",
                     "old runtime: tokens written per second over the run"]  # fmt: skip
    seconds, rate, broken_fig, old_seconds, old_rate = figs
    assert seconds.reference == results[OLD]["seconds"] and seconds.goal == "<= 0.34" and seconds.ok is not None
    assert rate.value == results["new"]["completion_tokens"] / results["new"]["seconds"]
    assert rate.reference == results[OLD]["completion_tokens"] / results[OLD]["seconds"] and rate.goal == ""
    assert broken_fig.note.startswith("FAILED: a runtime that dies: moaa run exited") and broken_fig.ok is None
    assert old_seconds.reference is None and old_rate.reference is None
    assert f"2 prompts: {results['new']['seconds']:.0f}s whole process" in seconds.note and "2 SFT rows" in seconds.note
    out = capsys.readouterr().out
    assert "new runtime: running the preset" in out and "old runtime: " in out and "pairs, failures: none" in out
    assert "a runtime that dies: FAILED: " in out
