"""`moaa compare` of two preference recipes: arms that differ only in `preference`, one SFT of the student,
DPO on each arm's pairs from it, and the DPO students judged against each other and against that SFT
model (deterministic students and judge behind the OpenAI-compatible test server; the whole flow with
tiny students and real DPO runs in tests/test_compare.py's slow test).

Run: .venv/bin/python -m pytest tests/test_compare_recipes.py -x -q
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_compare import LOCAL, ROOT, compare_with_fakes, prefers_the_answer_to_the_question, tiny_eval_settings
from test_train import write_demo_version

from moaa.cli import main
from moaa.config import dump_config, load_config
from moaa.errors import ConfigError, InputError
from moaa.testing.openai_server import OpenAITestServer
from moaa.train.comparison import CompareSettings, CompareSteps, build_arms
from moaa.train.matchups import evaluate_students
from moaa.train.recipes import read_recipe
from moaa.train.runs import read_lineage, write_lineage

POLICY_ONLY = {"include_sft_answer": False}
WITH_MIXTURE = {"include_sft_answer": True, "scorer": {"kind": "pointwise"}}


def test_recipe_arms_differ_only_in_preference():
    base = load_config(LOCAL)
    a, b = build_arms(base, CompareSettings(name="r", preference_a=POLICY_ONLY, preference_b=WITH_MIXTURE))
    da, db = dump_config(a.config), dump_config(b.config)
    assert (da.pop("name"), db.pop("name")) == ("r-A", "r-B")
    pa, pb = da.pop("preference"), db.pop("preference")
    assert da == db and da["sft"] == dump_config(base)["sft"]  # same SFT stage, prompts, seeds, split
    assert pa["enabled"] and pb["enabled"]
    assert (pa["include_sft_answer"], pb["include_sft_answer"]) == (False, True)
    # a mapping is merged key by key: arm B's scorer changed its kind and kept the config's judges
    judges = dump_config(base)["preference"]["scorer"]["judges"]
    assert pb["scorer"]["kind"] == "pointwise" and pb["scorer"]["judges"] == judges
    assert a.describe() == "pool policy x3, best_worst, verifier+pointwise"
    assert b.describe() == "pool policy x3 + mixture, best_worst, pointwise"
    assert a.method == "pairs: best_worst"


def test_the_same_recipe_twice_and_bad_recipe_files_fail_in_one_line(tmp_path: Path, capsys):
    with pytest.raises(InputError, match="arms A and B would make the same pairs"):
        build_arms(load_config(LOCAL), CompareSettings(preference_a={}, preference_b={"samples": 3}))
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({"preference": {"include_sft_answer": True}}))
    listed = tmp_path / "list.yaml"
    listed.write_text("- samples: 3\n")
    assert read_recipe(same) == {"include_sft_answer": True}  # under `preference:` or bare
    settings = str(ROOT / "configs/train/compare.yaml")
    for flags, message in [
        ([f"--preference-a={same}", f"--preference-b={same}"], "would make the same pairs"),
        ([f"--preference-b={tmp_path / 'missing.yaml'}"], "preference recipe file not found"),
        ([f"--preference-b={listed}"], "a preference recipe is a mapping of preference keys"),
    ]:
        assert main(["compare", LOCAL, *flags, "--settings", settings, "--runs-root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1
    assert not (tmp_path / "compare").exists()
    with pytest.raises(ConfigError, match="not valid YAML"):
        (tmp_path / "broken.yaml").write_text("a: [\n")
        read_recipe(tmp_path / "broken.yaml")


class RecipeSteps:
    """Data: demo versions (SFT rows and pairs); SFT and DPO: model folders whose lineage names their data
    and start model, as the real runs write it."""

    def __init__(self, tmp: Path, clients):
        self.tmp, self.configs, self.calls = tmp, [], []
        self.evaluate = functools.partial(evaluate_students, clients=clients)

    def make_data(self, config):
        self.configs.append(config)
        pairs = {"rows": 20, "prompts": 24, "dropped": {"near_tie": 4}}
        stages = {"sft": {"rows": 24, "failed": 0}, "preference": pairs}
        summary = {"stages": stages, "per_prompt": {"calls": 4.0, "tokens": 300.0}, "cost": 0.0, "calls": 96,
                   "this_run": {"calls": 0}, "seconds": 1.0}  # fmt: skip
        return {"version_path": str(write_demo_version(Path(config.output.root), config.name)), **summary}

    def _run(self, kind: str, **kw) -> SimpleNamespace:
        self.calls.append((kind, kw))
        folder = self.tmp / "runs" / kind / kw["data"].replace("@", "-")
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        write_lineage(folder, kind, [{"kind": "dataset", "ref": kw["data"]}, {"kind": "model", "path": kw["model"]}])
        return SimpleNamespace(output=folder)

    def steps(self) -> CompareSteps:
        return CompareSteps(self.make_data, functools.partial(self._run, "sft"), self.evaluate,
                            dpo=functools.partial(self._run, "dpo"))  # fmt: skip


def recipe_model(ref: str, start: Path) -> str:
    """DPO on arm A's pairs answers; DPO on arm B's and the shared SFT model say one thing each."""
    lineage = read_lineage(ref)
    return {("dpo", "rc-A@v1"): "answers", ("dpo", "rc-B@v1"): "constant",
            ("sft", "rc-A@v1"): "base-constant"}[(lineage["kind"], lineage["parents"][0]["ref"])]  # fmt: skip


def test_recipes_train_one_sft_then_dpo_per_arm_and_judge_against_that_sft(tmp_path: Path):
    start = tmp_path / "start"
    results, fake, _, _ = compare_with_fakes(
        tmp_path, prefers_the_answer_to_the_question, recipe_model, RecipeSteps, name="rc",
        preference_a=POLICY_ONLY, preference_b=WITH_MIXTURE,
    )  # fmt: skip
    sfts = [kw for kind, kw in fake.calls if kind == "sft"]
    dpos = [kw for kind, kw in fake.calls if kind == "dpo"]
    start_sft = str((tmp_path / "runs" / "sft" / "rc-A-v1").resolve())
    assert [(kw["data"], kw["model"]) for kw in sfts] == [("rc-A@v1", str(start.resolve()))]  # one SFT, arm A's rows
    assert [(kw["data"], kw["model"]) for kw in dpos] == [("rc-A@v1", start_sft), ("rc-B@v1", start_sft)]
    assert all(kw["config"] == "configs/train/dpo.yaml" for kw in dpos)
    assert [c.preference.include_sft_answer for c in fake.configs] == [False, True]
    assert results["kind"] == "preference" and results["student"] == start_sft  # base = the shared SFT model
    a, b = results["arms"]["A"], results["arms"]["B"]
    assert a["sft"].endswith("dpo/rc-A-v1") and b["sft"].endswith("dpo/rc-B-v1") and a["sft_start"] == start_sft
    assert (a["cost"]["pairs"], a["cost"]["pairs_dropped"]) == (20, {"near_tie": 4})
    m = results["matchups"]
    assert m["A vs B"]["win_rate"] == 1.0 and m["A vs base"]["win_rate"] == 1.0
    assert (m["B vs base"]["tie"], m["B vs base"]["win_rate"]) == (7, 0.5)
    assert m["A vs base"]["baseline"] == start_sft

    folder = Path(results["folder"])
    report = (folder / "report.md").read_text()
    assert "A = pairs: best_worst vs B = pairs: best_worst" in report
    assert f"-> DPO `{a['sft']}`" in report and "the SFT model both DPO runs start from" in report
    assert "| A | 20 | 24 | near_tie 4 |" in report  # the pairs each recipe made
    lineage = read_lineage(folder)
    assert [(p["kind"], p.get("arm") or p.get("matchup")) for p in lineage["parents"]] == [
        ("dataset", "A"), ("sft", "A+B"), ("dpo", "A"), ("dataset", "B"), ("dpo", "B"),
        ("eval", "A vs B"), ("eval", "A vs base"), ("eval", "B vs base")]  # fmt: skip
    saved = json.loads((folder / "results.json").read_text())
    assert saved["arms"]["B"]["describe"].endswith("+ mixture, best_worst, pointwise") and saved["kind"] == "preference"


# ---------------------------------------------------------------- the whole flow (slow)

CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)


def rates_by_hash(request: dict) -> str | None:
    """The run's pointwise judge rates a candidate by a hash of its text (1-5); the eval judge prefers the longer
    answer (the same in both orders); every other call gets the test server's seeded default reply."""
    shown = dict(CANDIDATE_RE.findall(request["messages"][-1]["content"]))
    if request["model"] == "judge-model":
        a, b = len(shown.get("A", "")), len(shown.get("B", ""))
        return json.dumps({"rationale": "length", "winner": "A" if a > b else "B" if b > a else "tie"})
    if len(shown) == 1:
        rating = 1 + int(hashlib.sha256(next(iter(shown.values())).encode()).hexdigest(), 16) % 5
        return json.dumps({"helpfulness": {"rationale": f"rated {rating}", "rating": rating}})
    return None


@pytest.mark.slow
def test_compare_flow_of_two_recipes_with_real_sft_and_dpo(tmp_path: Path, prefect_harness, monkeypatch):
    """Both arms' SFT rows and pairs from the pipeline on the test server (arm B adds the mixture's answer
    to the pool), one real LoRA SFT of a tiny model, a real DPO run per arm from it, the students judged."""
    import polars as pl
    from conftest import base_raw
    from test_train import TEST_SIZE, TINY_SETTINGS
    from tiny_models import build_tiny_causal_lm

    from flows.compare_flow import compare_arms

    monkeypatch.chdir(tmp_path)
    student = build_tiny_causal_lm(tmp_path / "student")
    with OpenAITestServer(responder=rates_by_hash) as server:
        raw = base_raw(tmp_path, server.base_url)
        raw["preference"] = {"enabled": True, "policy": {"endpoint": "test", "temperature": 1.0}, "samples": 3,
                             "scorer": {"kind": "pointwise", "criteria": ["helpfulness"],
                                        "judges": [{"endpoint": "test", "temperature": 0.0}]},
                             "min_margin": 0.5}  # fmt: skip
        run_config = tmp_path / "run.yaml"
        run_config.write_text(yaml.safe_dump(raw))
        eval_yaml = tiny_eval_settings(tmp_path, server.base_url)
        settings = CompareSettings(
            data_config=str(run_config), prompts=8, test_size=TEST_SIZE, student=str(student),
            runs_root=str(tmp_path / "runs"), sft_config=str(ROOT / "configs/train/sft.yaml"),
            sft_overrides=TINY_SETTINGS, dpo_config=str(ROOT / "configs/train/dpo.yaml"), dpo_overrides=TINY_SETTINGS,
            eval_config=str(eval_yaml),
            preference_a={}, preference_b={"include_sft_answer": True},
        )  # fmt: skip
        results = compare_arms(settings.model_dump())

    a, b = results["arms"]["A"], results["arms"]["B"]
    assert (a["dataset"], b["dataset"]) == ("test-run-A@v1", "test-run-B@v1") and results["kind"] == "preference"
    start = a["sft_start"]
    assert read_lineage(start)["parents"][0]["ref"] == "test-run-A@v1" and results["student"] == start
    for arm in (a, b):
        dpo = read_lineage(arm["sft"])
        assert dpo["kind"] == "dpo" and dpo["parents"][0]["ref"] == arm["dataset"]
        assert dpo["parents"][1]["path"] == start  # each DPO run continued the one SFT model
        assert json.loads((Path(arm["sft"]) / "metrics.json").read_text())["final"]["global_step"] == 2
        assert arm["cost"]["pairs"] > 0

    def candidates(arm: dict) -> set[str]:  # the agents of the arm's judged candidates (its trace)
        frame = pl.concat([pl.read_parquet(f) for f in Path(arm["dataset_path"]).glob("data/trace/*.parquet")])
        return set(frame.filter((pl.col("kind") == "sample") & (pl.col("stage") == "preference"))["agent"])

    assert (candidates(a), candidates(b)) == ({"policy"}, {"policy", "mixture"})  # arm B's recipe took effect
    assert b["describe"] == "pool policy x3 + mixture, best_worst, pointwise"
    for m in results["matchups"].values():
        assert m["win"] + m["tie"] + m["loss"] + m["unjudged"] == results["held_out"]["n"] > 0
    assert "DPO pairs" in (Path(results["folder"]) / "report.md").read_text()
