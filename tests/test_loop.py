"""The self-improvement loop: round configs, the stop rule, lineage (with stand-in steps), and one real
round of the Prefect flow on the embedded default, kept small (slow).

Run: .venv/bin/python -m pytest tests/test_loop.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train import write_demo_version

from moaa.config import MoaaConfig, dump_config, load_config
from moaa.errors import InputError
from moaa.train.loop import STUDENT, LoopSettings, LoopSteps, moa_config, pairs_config, run_loop
from moaa.train.runs import read_lineage, write_lineage

ROOT = Path(__file__).resolve().parents[1]


def test_round_configs():
    base = load_config(ROOT / "configs/local.yaml")
    s = LoopSettings(name="lp", student_proposer=True, prompts_per_round=3, samples=2)
    moa = moa_config(base, s, 2, "/models/student")
    assert (moa.name, moa.prompts.seed, moa.prompts.limit, moa.preference.enabled) == ("lp-moa", 1, 3, False)
    assert moa.endpoints[STUDENT].backend == "transformers" and moa.endpoints[STUDENT].model == "/models/student"
    assert [p.endpoint for p in moa.sft.proposers] == ["local", "local", "local", STUDENT]
    # The student answers at the run config's default length.
    assert moa.endpoints[STUDENT].sampling.max_tokens == base.endpoints["local"].sampling.max_tokens
    pairs = pairs_config(moa, s, "/runs/sft/x")
    assert pairs.name == "lp-pairs" and pairs.preference.enabled and pairs.preference.samples == 2
    assert pairs.preference.policy.endpoint == STUDENT and pairs.endpoints[STUDENT].model == "/runs/sft/x"
    assert pairs.preference.policy.max_tokens == base.preference.policy.max_tokens
    assert pairs.preference.policy.temperature == base.preference.policy.temperature
    assert pairs.preference.scorer.judges[0].endpoint == "local"
    assert base.name == "local-moa" and base.preference.policy.endpoint == "local"  # the base config is untouched
    assert moa.sft.proposers[:3] == base.sft.proposers


@pytest.mark.parametrize("named", [True, False])
def test_a_pool_gets_the_round_student_as_its_agent_named_student(named):
    """With preference.candidates, the pairs step puts the served SFT student in the pool (Tulu 3's
    on-policy pairs with pairing one_side_from: student), in place of a candidate named student."""
    base = load_config(ROOT / "configs/local.yaml")
    data = dump_config(base)
    others = [{"endpoint": "local", "name": "teacher", "samples": 2}]
    student = [{"endpoint": "local", "name": "student", "samples": 3}] if named else []
    pairing = {"one_side_from": "student"} if named else "best_worst"  # a rule names agents the config has
    data["preference"] |= {"policy": None, "candidates": others + student, "pairing": pairing}
    data["preference"].pop("samples")
    moa = moa_config(MoaaConfig.model_validate(data), LoopSettings(name="lp", samples=2), 1, "/models/student")
    pairs = MoaaConfig.model_validate(dump_config(pairs_config(moa, LoopSettings(name="lp", samples=2), "/runs/sft/x")))
    pool = {m.label: (m.agent.endpoint if m.agent else None, m.samples) for m in pairs.preference.pool()}
    # the base config's own setting stays: its mixture's SFT answer is one more candidate
    assert pool == {"teacher": ("local", 2), "student": (STUDENT, 3 if named else 2), "mixture": (None, 1)}
    assert pairs.endpoints[STUDENT].model == "/runs/sft/x" and pairs.preference.policy is None


class FakeSteps:
    """Stand-ins for the pipeline, SFT, DPO and eval: real data set versions and run folders, no models."""

    def __init__(self, tmp: Path, win_rates: list[float], pairs_fail: bool = False):
        self.tmp, self.win_rates, self.pairs_fail = tmp, list(win_rates), pairs_fail
        self.calls: list[tuple[str, dict]] = []

    def run_folder(self, kind: str, parents: list[dict]) -> Path:
        folder = self.tmp / "runs" / kind / f"r{len(self.calls)}"
        folder.mkdir(parents=True)
        write_lineage(folder, kind, parents)
        return folder

    def make_data(self, config):
        self.calls.append(("data", {"name": config.name, "seed": config.prompts.seed}))
        path = write_demo_version(Path(config.output.root), config.name, n=8, dpo=not self.pairs_fail)
        return {"version_path": str(path)}

    def sft(self, **kw):
        self.calls.append(("sft", kw))
        return SimpleNamespace(output=self.run_folder("sft", [{"kind": "dataset", "ref": kw["data"]}]))

    def dpo(self, **kw):
        self.calls.append(("dpo", kw))
        if self.pairs_fail:
            raise InputError("no dpo/train rows")
        return SimpleNamespace(output=self.run_folder("dpo", [{"kind": "dataset", "ref": kw["data"]}]))

    def evaluate(self, **kw):
        self.calls.append(("eval", kw))
        rate = self.win_rates.pop(0)
        results = {"win_rate": rate, "lc_win_rate": rate, "ci": [0.0, 1.0], "win": 1, "tie": 0, "loss": 0}
        return SimpleNamespace(output=self.run_folder("eval", []), results=results)

    def steps(self) -> LoopSteps:
        return LoopSteps(self.make_data, self.sft, self.dpo, self.evaluate)


def loop_settings(tmp_path: Path, **kw) -> LoopSettings:
    start = tmp_path / "start"
    start.mkdir(exist_ok=True)
    (start / "config.json").write_text("{}")
    overrides = [f"output.root={tmp_path / 'data'}"]
    return LoopSettings(student=str(start), runs_root=str(tmp_path / "runs"), data_overrides=overrides,
                        data_config=str(ROOT / "configs/local.yaml"), **kw)  # fmt: skip


def test_loop_chains_rounds_and_stops_on_a_small_gain(tmp_path: Path):
    fake = FakeSteps(tmp_path, win_rates=[0.8, 0.52, 0.9])
    summary = run_loop(loop_settings(tmp_path, rounds=5, min_gain=0.05), fake.steps())
    rounds = summary["rounds"]
    assert len(rounds) == 2 and summary["stopped"].startswith("round 2 gained +0.020")
    assert [c[0] for c in fake.calls] == ["data", "sft", "data", "dpo", "eval"] * 2
    data_calls = [c[1] for c in fake.calls if c[0] == "data"]
    assert data_calls == [{"name": "loop-moa", "seed": 0}, {"name": "loop-pairs", "seed": 0},
                          {"name": "loop-moa", "seed": 1}, {"name": "loop-pairs", "seed": 1}]  # fmt: skip
    sfts = [c[1] for c in fake.calls if c[0] == "sft"]
    dpos = [c[1] for c in fake.calls if c[0] == "dpo"]
    evals = [c[1] for c in fake.calls if c[0] == "eval"]
    start = str((tmp_path / "start").resolve())
    assert sfts[0]["model"] == start and sfts[0]["data"] == "loop-moa@v1" and sfts[0]["extra_parents"] == []
    assert dpos[0]["model"] == rounds[0]["sft"] and dpos[0]["data"] == "loop-pairs@v1"
    assert evals[0] == evals[0] | {"model": rounds[0]["dpo"], "baseline": start, "data": "loop-pairs@v1"}
    # Round 2 starts from round 1's DPO model and records round 1's eval as a parent.
    assert sfts[1]["model"] == rounds[0]["dpo"] and sfts[1]["data"] == "loop-moa@v2"
    assert sfts[1]["extra_parents"][0]["path"] == rounds[0]["eval"]
    assert evals[1]["baseline"] == rounds[0]["dpo"] and rounds[1]["gain"] == pytest.approx(0.02)
    lineage = read_lineage(summary["folder"])
    kinds = [(a["kind"], a.get("ref")) for a in lineage["parents"]][:5]
    assert kinds == [("dataset", "loop-moa@v1"), ("sft", None), ("dataset", "loop-pairs@v1"), ("dpo", None),
                     ("eval", None)]  # fmt: skip
    assert lineage["parents"][2]["parents"][1] == {"kind": "model", "ref": rounds[0]["sft"], "role": "policy"}
    assert "| 2 | loop-moa@v2 |" in (Path(summary["folder"]) / "README.md").read_text()


def test_loop_stops_after_n_rounds_and_keeps_sft_without_pairs(tmp_path: Path):
    fake = FakeSteps(tmp_path, win_rates=[0.9], pairs_fail=True)
    summary = run_loop(loop_settings(tmp_path, rounds=1), fake.steps())
    (record,) = summary["rounds"]
    assert summary["stopped"] == "1 round(s) done"
    assert record["dpo"] is None and record["model"] == record["sft"] == summary["final_model"]
    assert [a["kind"] for a in record["artifacts"]] == ["dataset", "sft", "dataset", "eval"]


def split_seed_with_both(settings: LoopSettings, test_size: float) -> int:
    """A split seed that puts exactly one of round 1's prompts in the test split and the rest in train
    (the split is a hash of seed and prompt_id, so a tiny run can land all prompts on one side)."""
    from moaa.dataset.versions import split_of
    from moaa.sources import load_prompts

    base = load_config(settings.data_config, settings.data_overrides)
    prompts = load_prompts(moa_config(base, settings, 1, "student").prompts, base_dir=ROOT).prompts
    for seed in range(1000):
        if [split_of(p.prompt_id, test_size, seed) for p in prompts].count("test") == 1:
            return seed
    raise AssertionError("no split seed found")


@pytest.mark.heavy
def test_one_round_of_the_flow_on_the_embedded_default(tmp_path: Path, prefect_harness, monkeypatch):
    """MoA data from the local llama.cpp model -> LoRA SFT of the local student -> its samples judged
    -> DPO -> eval vs the start model, all small (3 prompts, short answers, 2 training steps)."""
    from flows.loop_flow import self_improvement_loop

    monkeypatch.chdir(ROOT)
    small = ["endpoints.local.sampling.max_tokens=32", "sft.aggregator.max_tokens=48", "output.test_size=0.34",
             "preference.policy.max_tokens=32", "preference.scorer.judges.0.max_tokens=120",
             "preference.scorer.criteria=[helpfulness]", "preference.limit=3", "preference.min_margin=0.1",
             "answers.truncated=keep", "sft.verify=keep", "preference.scorer.kind=pointwise",
             "preference.verify=off",  # 32-token answers: cut, and wrong where checked (the plumbing is tested)
             f"output.root={tmp_path / 'data'}", f"run.work_dir={tmp_path / 'work'}",
             f"cache.path={tmp_path / 'cache.sqlite'}"]  # fmt: skip
    steps = ["max_steps=2", "max_length=256"]
    evals = ["limit=1", "generation.max_tokens=32", "answers.truncated=keep", "criteria=[helpfulness]",
             "judge.max_tokens=120"]  # fmt: skip
    settings = LoopSettings(rounds=1, prompts_per_round=3, samples=2, data_overrides=small,
                            runs_root=str(tmp_path / "runs"), sft_overrides=steps, dpo_overrides=steps,
                            eval_overrides=evals)  # fmt: skip
    seed = split_seed_with_both(settings, 0.34)
    settings.data_overrides.append(f"output.split_seed={seed}")
    summary = self_improvement_loop(settings.model_dump())
    (record,) = summary["rounds"]
    assert summary["stopped"] == "1 round(s) done" or summary["stopped"].startswith("round 1 gained")
    assert record["dataset"] == "loop-moa@v1" and record["pairs"] == "loop-pairs@v1"
    sft_lineage = read_lineage(record["sft"])
    assert sft_lineage["parents"][0]["ref"] == "loop-moa@v1"
    assert json.loads((Path(record["sft"]) / "metrics.json").read_text())["final"]["global_step"] == 2
    if record["dpo"]:  # the local judge may separate no pair; then the round keeps the SFT model
        assert read_lineage(record["dpo"])["parents"][1]["path"] == record["sft"]
    eval_results = json.loads((Path(record["eval"]) / "results.json").read_text())
    assert eval_results["prompts"] == 1 and sum(eval_results[k] for k in ("win", "tie", "loss", "unjudged")) == 1
    assert eval_results["dataset"]["ref"] == "loop-pairs@v1"
    assert read_lineage(summary["folder"])["rounds"][0]["eval"] == record["eval"]
