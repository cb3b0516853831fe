"""Dry-run estimates: validation, prompt counts, tokens, and call counts equal to what a real run sends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, base_raw, make_config

from moaa.cli import main
from moaa.config import dump_config, parse_config
from moaa.errors import ConfigError, InputError
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.call_shapes import DEFAULT_MAX_TOKENS, OUTPUT_FRACTION
from moaa.work.estimate import estimate_run
from moaa.work.estimate_report import format_estimate


def respond(req: dict) -> str | list[str] | None:
    """Valid JSON for role generators, moderators and judges (ratings vary with the candidate)."""
    text = json.dumps(req["messages"])
    if "different role descriptions" in text:
        n = int(text.split("Write ")[1].split(" ")[0])
        return json.dumps([f"You are expert number {i}." for i in range(n)])
    if "You moderate" in text:
        return json.dumps({"reasoning": "0 and 1 are best", "selected": [0, 1], "stop": False})
    digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    if '\\"winner\\"' in text:
        return json.dumps({"rationale": "one is better", "winner": "AB"[digest % 2]})
    if "Rate the candidate answer" in text:
        keys = ("instruction_following", "honesty", "truthfulness", "helpfulness")
        return json.dumps({k: {"rationale": "fine", "rating": 1 + (digest >> i) % 5} for i, k in enumerate(keys)})
    return None


PREF = {
    "enabled": True,
    "policy": {"endpoint": "test", "temperature": 1.0},
    "samples": 3,
    "limit": 3,
    "min_margin": 0.0,
}
POOL = {
    "enabled": True,
    "candidates": [
        {"endpoint": "test", "name": "big", "temperature": 1.0, "samples": 2},
        {"endpoint": "judge", "name": "small", "temperature": 0.9, "samples": 1},
    ],
    "limit": 3,
    "min_margin": 0.0,
    "scorer": {"kind": "pointwise", "judges": [{"endpoint": "judge"}]},
}
VARIANTS = {
    "moa-2": {"sft": {"method": "moa", "layers": 2}},
    "moa-3": {"sft": {"method": "moa", "layers": 3}},
    "moa-lite": {"sft": {"method": "moa-lite"}},
    "self-moa-n": {"sft": {"method": "self-moa", "self_moa": {"samples": 4}}},
    "self-moa-no-n": {"sft": {"method": "self-moa", "self_moa": {"samples": 4}}, "supports_n": False},
    "self-moa-seq": {"sft": {"method": "self-moa-seq", "seq": {"samples": 7, "window": 4, "new_per_step": 2}}},
    "smoa": {"sft": {"method": "smoa", "smoa": {"rounds": 2, "k": 2, "early_stop": False}}},
    "moa-multi-turn": {"sft": {"method": "moa", "layers": 2}, "multi_turn": True},
    "pointwise": {"preference": PREF | {"scorer": {"kind": "pointwise", "judges": [{"endpoint": "judge"}]}}},
    "pairwise": {"preference": PREF | {"scorer": {"kind": "pairwise", "judges": [{"endpoint": "judge"}]}}},
    # Preference pools (moaa.config.pools): several agents, the mixture's SFT answer, the pairing rules.
    "pool": {"preference": POOL},
    "pool-no-n": {"preference": POOL, "supports_n": False},
    "delta-mixture": {
        "preference": POOL
        | {
            "candidates": [POOL["candidates"][0]],
            "include_sft_answer": True,
            "pairing": {"delta": {"stronger": "mixture", "weaker": "big"}},
        },
    },  # fmt: skip
    "one-side-pairwise": {
        "preference": POOL
        | {
            "include_sft_answer": True,
            "pairing": {"one_side_from": "small"},
            "scorer": {"kind": "pairwise", "judges": [{"endpoint": "judge"}]},
        },
    },  # fmt: skip
}


def variant_raw(tmp_path: Path, base_url: str, variant: dict) -> dict:
    raw = base_raw(tmp_path, base_url)
    sft = raw["sft"] | variant.get("sft", {})
    raw["sft"] = sft | {"proposers": [{"endpoint": "test", "temperature": 0.3 + i / 10} for i in range(3)]}
    raw["endpoints"]["judge"] = raw["endpoints"]["test"] | {"model": "judge-model"}
    if "supports_n" in variant:
        raw["endpoints"]["test"]["supports_n"] = variant["supports_n"]
    if "preference" in variant:
        raw["preference"] = variant["preference"]
    if variant.get("multi_turn"):
        path = tmp_path / "chats.jsonl"
        chats = [
            [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": "old"},
                {"role": "user", "content": f"And follow-up {i}?"},
            ]
            for i in range(3)
        ]
        chats.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Single turn."}])
        path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
        raw["prompts"] = {"path": str(path)}
    return raw


def chat_requests(srv: OpenAITestServer) -> list[dict]:
    return [r for r in srv.requests if r["path"] == "/v1/chat/completions"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_estimated_calls_equal_the_requests_of_a_real_run(name, tmp_path, prefect_harness):
    from flows.pipeline_flow import moaa_pipeline, task_runner_for

    with OpenAITestServer(responder=respond, ignore_n=VARIANTS[name].get("supports_n") is False) as srv:
        raw = variant_raw(tmp_path, srv.base_url, VARIANTS[name])
        config = parse_config(raw)
        estimate = estimate_run(config, base_dir=ROOT)
        assert chat_requests(srv) == []  # the dry run sent nothing
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(dump_config(config)))
        summary = moaa_pipeline.with_options(task_runner=task_runner_for(config))(str(path))
        sent = chat_requests(srv)
    assert summary["failures"] == {}
    assert estimate["total"]["upper_bound"] is False
    assert estimate["total"]["calls"] == len(sent) > 0
    by_model = {e["model"]: e["calls"] for e in estimate["endpoints"].values()}
    sent_by_model = {m: sum(1 for r in sent if r["model"] == m) for m in {r["model"] for r in sent}}
    assert by_model == sent_by_model
    # The run's stats agree too (no retries on a healthy server), SMoA's once-per-run role
    # generation included.
    assert sum(e["requests"] for e in summary["endpoints"].values()) == len(sent)


def test_estimate_counts_prompts_and_drops(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:9/v1")
    est = estimate_run(config, base_dir=ROOT)
    assert est["prompts"] == {
        "source": "default.jsonl",
        "read": 130,
        "kept": 4,
        "dropped": {"sampled_out": 126},
        "preference": 0,
    }
    sft = est["stages"]["sft"]
    assert (sft["prompts"], sft["turns"], sft["calls"], sft["per_run_calls"]) == (4, 4, 16, 0)
    assert list(sft["agents"]) == ["proposers[0]", "proposers[1]", "proposers[2]", "aggregator"]
    assert est["endpoints"]["test"]["calls"] == est["total"]["calls"] == 16


def test_tokens_follow_max_tokens_and_references(tmp_path):
    config = make_config(
        tmp_path,
        "http://127.0.0.1:9/v1",
        "sft.proposers.0.max_tokens=100",
        "endpoints.test.price_input_per_mtok=1",
        "endpoints.test.price_output_per_mtok=2",
    )
    agents = estimate_run(config, base_dir=ROOT)["stages"]["sft"]["agents"]
    assert agents["proposers[0]"]["output_tokens"] == round(4 * OUTPUT_FRACTION * 100)
    assert agents["proposers[1]"]["output_tokens"] == round(4 * OUTPUT_FRACTION * DEFAULT_MAX_TOKENS)
    # Each of the 4 aggregator calls reads three references of the proposers' mean answer length,
    # plus the prompt and the template (a few hundred tokens).
    references = 4 * 3 * OUTPUT_FRACTION * (100 + 2 * DEFAULT_MAX_TOKENS) / 3
    assert references < agents["aggregator"]["input_tokens"] < references + 4 * 400
    assert agents["proposers[1]"]["input_tokens"] < 4 * 100
    a = agents["aggregator"]
    assert a["cost"] == pytest.approx((a["input_tokens"] * 1 + a["output_tokens"] * 2) / 1e6, rel=1e-3)


def test_format_names_stages_endpoints_and_assumptions(tmp_path):
    config = make_config(
        tmp_path,
        "http://127.0.0.1:9/v1",
        "sft.method=smoa",
        preference=PREF | {"scorer": {"kind": "pairwise", "judges": [{"endpoint": "test"}]}},
    )
    text = format_estimate(estimate_run(config, base_dir=ROOT))
    assert "method smoa, scorer pairwise - no model was called" in text
    assert "stage sft: 4 prompts" in text and "stage preference: 3 prompts" in text
    assert "smoa.role_generator" in text and "(upper bound)" in text
    assert "60% of each agent's max_tokens" in text and "no price set for test" in text


def test_the_dry_run_lists_the_pool_and_counts_each_agents_calls(tmp_path):
    raw = variant_raw(tmp_path, "http://127.0.0.1:9/v1", VARIANTS["one-side-pairwise"])
    est = estimate_run(parse_config(raw), base_dir=ROOT)
    text = format_estimate(est)
    assert (
        "pool: big x2 (candidates[0]), small x1 (candidates[1]), mixture (this run's SFT answer, no call); "
        "one side from small: every pair holds one of its answers" in text
    )
    agents = est["stages"]["preference"]["agents"]
    # 3 prompts; a pool of 4 candidates (2 + 1 + the mixture's) judged pairwise: 4 * 3 per prompt.
    assert {label: a["calls"] for label, a in agents.items()} == {
        "candidates[0]": 3, "candidates[1]": 3, "scorer.judges[0]": 36,
    }  # fmt: skip


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["prompts.path=missing.jsonl"], InputError, "missing.jsonl"),
        (["prompts.min_chars=100000"], Exception, "no prompts left after filtering"),
    ],
)
def test_estimate_rejects_what_a_run_would(tmp_path, overrides, error, match):
    config = make_config(tmp_path, "http://127.0.0.1:9/v1", *overrides)
    with pytest.raises(error, match=match):
        estimate_run(config, base_dir=tmp_path)


def test_a_scorer_without_judges_fails_at_load_before_any_estimate(tmp_path):
    with pytest.raises(ConfigError, match="preference.scorer.judges: kind pointwise needs at least one judge"):
        make_config(tmp_path, "http://127.0.0.1:9/v1", preference=PREF | {"scorer": {"kind": "pointwise"}})


def test_cli_dry_run_prints_the_estimate(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_raw(tmp_path)))
    assert main(["run", str(path), "--dry-run", "--set", "sft.layers=3"]) == 0
    out = capsys.readouterr().out
    assert "moaa dry run 'test-run': method moa" in out
    assert "stage sft: 4 prompts, 28 calls (7.00 per prompt)" in out


def test_cli_dry_run_needs_no_key_and_names_the_missing_variable(monkeypatch, capsys):
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    monkeypatch.chdir(ROOT)
    assert main(["run", "configs/moa.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "moaa dry run" in out and "no model was called" in out
    assert "before the real run: endpoint" in out and "TOGETHER_API_KEY is not set" in out
    assert main(["run", "configs/moa.yaml"]) != 0  # the real run still refuses at once
    assert "TOGETHER_API_KEY is not set" in capsys.readouterr().err


def test_the_dry_run_says_what_checking_answers_adds(tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text(json.dumps({"prompt": "2 + 2?", "answer": "4"}) + "\n" + json.dumps({"prompt": "Hi."}) + "\n")
    notes = estimate_run(make_config(tmp_path, prompts={"path": str(source)}), base_dir=ROOT)["assumptions"]
    assert "1 of 2 prompts carry a reference: each final answer that fails its check is asked once more" in notes[-1]
    off = make_config(tmp_path, "http://127.0.0.1:9/v1", "sft.verify=off", prompts={"path": str(source)})
    assert not any("carry a reference" in n for n in estimate_run(off, base_dir=ROOT)["assumptions"])
