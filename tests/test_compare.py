"""`moaa compare`: the arms' run configs, the matchups' wiring (deterministic students and judge behind
the OpenAI-compatible test server), the CLI's one-line errors, and the whole Prefect flow on the test
server with tiny students (slow).

Run: .venv/bin/python -m pytest tests/test_compare.py -x -q
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import base_raw
from test_train import TEST_SIZE, TINY_SETTINGS, write_demo_version

from moaa.cli import main
from moaa.config import EndpointConfig, dump_config, load_config
from moaa.errors import InputError
from moaa.models.client import OpenAIChatClient
from moaa.testing.openai_server import OpenAITestServer
from moaa.train.comparison import CompareSettings, CompareSteps, build_arms, load_compare_settings, run_compare
from moaa.train.data import find_dataset, held_out_prompts, load_rows
from moaa.train.evaluate import client_for
from moaa.train.matchups import evaluate_students
from moaa.train.runs import read_lineage, write_lineage

ROOT = Path(__file__).resolve().parents[1]
LOCAL = str(ROOT / "configs/local.yaml")
_CANDIDATE = re.compile(r"<candidate id=(A|B)>\n(.*?)\n</candidate>", re.DOTALL)
_QUESTION = re.compile(r"\[user\]\n(.*?)\n</conversation>", re.DOTALL)
CONSTANT = "I cannot help with that."
BASE_CONSTANT = "Hello! How are you today?"


def same_except_generation(a, b) -> bool:
    da, db = dump_config(a), dump_config(b)
    for d in (da, db):
        d.pop("name"), d.pop("sft")
    return da == db


def test_arms_share_everything_but_the_generation():
    base = load_config(LOCAL)
    a, b = build_arms(base, CompareSettings(prompts=12, test_size=0.25))
    assert (a.config.name, b.config.name) == ("local-moa-A", "local-moa-B")
    assert same_except_generation(a.config, b.config)
    assert a.config.prompts == b.config.prompts and a.config.prompts.limit == 12
    assert a.config.output.test_size == b.config.output.test_size == 0.25
    assert a.config.output.split_seed == b.config.output.split_seed and a.config.cache == b.config.cache
    assert not a.config.preference.enabled and not b.config.preference.enabled
    assert a.config.sft == base.sft  # arm A is the config's own method
    # The default baseline: the proposer on the aggregator's endpoint (the first, all share `local`), alone.
    assert b.method == "single" and b.config.sft.proposers == [base.sft.proposers[0]]
    assert b.config.sft.aggregator is None
    assert b.describe() == "single (precise)" and a.describe() == "moa (precise, teacher, creative -> aggregator)"


@pytest.mark.parametrize(
    "flags, method, proposers, aggregator",
    [
        ({"baseline_agent": "teacher"}, "single", ["teacher"], None),
        ({"baseline_agent": "2"}, "single", ["creative"], None),
        ({"baseline_agent": "aggregator"}, "single", ["aggregator"], None),
        ({"arm_b": "self-moa", "baseline_agent": "teacher"}, "self-moa", ["teacher"], "aggregator"),
        ({"arm_b": "moa-lite"}, "moa-lite", ["precise", "teacher", "creative"], "aggregator"),
    ],
)
def test_arm_b_is_any_method_with_any_agent(flags, method, proposers, aggregator):
    _, b = build_arms(load_config(LOCAL), CompareSettings(**flags))
    assert b.method == method and [p.name for p in b.config.sft.proposers] == proposers
    assert (b.config.sft.aggregator.name if b.config.sft.aggregator else None) == aggregator


def test_without_a_proposer_on_its_endpoint_the_aggregator_writes_alone():
    base = load_config(ROOT / "configs/moa.yaml")  # aggregator qwen3-235b proposes nothing
    _, b = build_arms(base, CompareSettings())
    assert b.config.sft.proposers == [base.sft.aggregator] and b.describe() == "single (qwen3-235b)"


def test_arm_a_can_be_named_too():
    a, b = build_arms(load_config(LOCAL), CompareSettings(arm_a="self-moa", arm_b="single", baseline_agent="teacher"))
    assert a.describe() == "self-moa (teacher -> aggregator)" and b.describe() == "single (teacher)"


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"arm_b": "moa"}, "arms A and B would make the same data"),
        ({"baseline_agent": "nope"}, "baseline agent 'nope' is not a proposer of the run config"),
    ],
)
def test_bad_arms_fail_in_one_line(flags, message, tmp_path: Path, capsys):
    with pytest.raises(InputError, match=message):
        build_arms(load_config(LOCAL), CompareSettings(**flags))
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    settings = str(ROOT / "configs/train/compare.yaml")
    assert main(["compare", LOCAL, *args, "--settings", settings, "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "compare").exists()


def test_settings_file_and_flags(tmp_path: Path):
    s = load_compare_settings(ROOT / "configs/train/compare.yaml", prompts=20, sft_overrides=["learning_rate=1e-4"])
    assert (s.prompts, s.test_size, s.arm_b) == (20, 0.25, "single")
    assert s.sft_overrides == ["max_steps=10", "learning_rate=1e-4"]  # the file's, then the command line's
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: 3\n")
    with pytest.raises(Exception, match="unknown key 'prompt'"):
        load_compare_settings(bad)


def test_held_out_prompts_are_the_ones_both_arms_have(tmp_path: Path):
    """A prompt that failed in one arm is judged in neither: every student answers the same prompts."""
    from moaa.train.matchups import shared_held_out

    a = find_dataset(str(write_demo_version(tmp_path / "data", "x-A", n=24)))
    b = find_dataset(str(write_demo_version(tmp_path / "data", "x-B", n=16)))  # prompts p016.. lost in arm B
    ids_a = [p["prompt_id"] for p in held_out_prompts(a)]
    ids_b = [p["prompt_id"] for p in held_out_prompts(b)]
    assert set(ids_b) < set(ids_a)
    prompts, differs = shared_held_out([a, b], None)
    assert [p["prompt_id"] for p in prompts] == ids_b and differs == 0
    assert [p["prompt_id"] for p in shared_held_out([a, b], 2)[0]] == ids_b[:2]
    c = find_dataset(str(write_demo_version(tmp_path / "other", "y", n=1)))  # p000 only, in the train split
    with pytest.raises(InputError, match="share no held-out prompt|has no test split"):
        shared_held_out([a, c], None)


# ---------------------------------------------------------------- the matchups' wiring


def question_of(judge_text: str) -> str:
    return _QUESTION.findall(judge_text)[-1].strip()


def prefers_the_answer_to_the_question(request: dict) -> str:
    """Students: 'answers' restates the question and answers it, the others say one constant thing.
    Judge: the candidate that addresses the question wins; neither or both is a tie (either order)."""
    text = request["messages"][-1]["content"]
    if request["model"] == "answers":
        return f"Here is my answer to: {text}"
    if request["model"] == "constant":
        return CONSTANT
    if request["model"] == "base-constant":
        return BASE_CONSTANT
    found = dict(_CANDIDATE.findall(text))
    question = question_of(text)
    hits = {k for k, v in found.items() if question in v}
    winner = hits.pop() if len(hits) == 1 else "tie"
    return json.dumps({"rationale": "addresses the question", "winner": winner})


def always_a(request: dict) -> str:
    if request["model"] != "judge-model":
        return prefers_the_answer_to_the_question(request)
    return json.dumps({"rationale": "first is best", "winner": "A"})


class FakeSteps:
    """Data: demo versions (the same prompts for both arms); SFT: a model folder with lineage naming its data."""

    def __init__(self, tmp: Path, clients):
        self.tmp, self.configs, self.sfts = tmp, [], {}
        self.evaluate = functools.partial(evaluate_students, clients=clients)

    def make_data(self, config):
        self.configs.append(config)
        return {"version_path": str(write_demo_version(Path(config.output.root), config.name)), **SUMMARY}

    def sft(self, **kw):
        folder = self.tmp / "runs" / "sft" / kw["data"].replace("@", "-")
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        write_lineage(folder, "sft", [{"kind": "dataset", "ref": kw["data"]}])
        self.sfts[str(folder.resolve())] = kw
        return SimpleNamespace(output=folder)

    def steps(self) -> CompareSteps:
        return CompareSteps(self.make_data, self.sft, self.evaluate)


SUMMARY = {"stages": {"sft": {"rows": 24, "failed": 0}}, "per_prompt": {"calls": 4.0, "tokens": 300.0},
           "cost": 0.0, "cost_to_make": 0.48, "calls": 96, "this_run": {"calls": 0}, "seconds": 1.0}  # fmt: skip


def arm_model(ref: str, start: Path) -> str:
    """The students behind the test server: arm A's run answers, arm B's and the base say one thing."""
    data = read_lineage(ref)["parents"][0]["ref"] if ref != str(start.resolve()) else None
    return {"cmp-A@v1": "answers", "cmp-B@v1": "constant", None: "base-constant"}[data]


def compare_with_fakes(tmp_path: Path, responder, model_of=arm_model, steps_of=None, **settings):
    """run_compare with fake data and training steps (`steps_of(tmp_path, clients)`, FakeSteps by default),
    the students (`model_of(run folder, start)`: the test server's model that answers for it) and the judge
    behind the test server; `settings`: more CompareSettings."""
    start = tmp_path / "start"
    start.mkdir()
    (start / "config.json").write_text("{}")
    with OpenAITestServer(responder=responder) as server:

        def clients(ref, settings, stats, name):
            if ref in settings.endpoints:
                return client_for(ref, settings, stats, name)
            model = model_of(ref, start)
            return OpenAIChatClient(name, EndpointConfig(base_url=server.base_url, model=model, max_retries=1), stats)

        eval_yaml = tmp_path / "eval.yaml"
        eval_yaml.write_text(yaml.safe_dump({
            "endpoints": {"judge": {"base_url": server.base_url, "model": "judge-model", "max_retries": 1}},
            "judge": {"endpoint": "judge", "temperature": 0.0}, "limit": None,
            "generation": {"temperature": 0.0, "max_tokens": 64, "seed": 0}}))  # fmt: skip
        fake = (steps_of or FakeSteps)(tmp_path, clients)
        data = [f"output.root={tmp_path / 'data'}"]
        base = {"name": "cmp", "data_config": LOCAL, "data_overrides": data, "student": str(start),
                "runs_root": str(tmp_path / "runs"), "eval_config": str(eval_yaml)}  # fmt: skip
        s = CompareSettings(**base | settings)
        results = run_compare(s, fake.steps())
        judged = [r["body"] for r in server.requests if r["body"] and r["body"].get("model") == "judge-model"]
    return results, fake, judged, tmp_path / "data"


def test_the_student_that_answers_beats_the_constant_one_in_both_orders(tmp_path: Path):
    results, fake, judged, data_root = compare_with_fakes(tmp_path, prefers_the_answer_to_the_question)
    # Both arms were made from the same prompts and split; SFT saw arm A's data for A, arm B's for B.
    a_config, b_config = fake.configs
    assert same_except_generation(a_config, b_config) and a_config.name == "cmp-A"
    assert sorted(kw["data"] for kw in fake.sfts.values()) == ["cmp-A@v1", "cmp-B@v1"]
    assert {kw["model"] for kw in fake.sfts.values()} == {str((tmp_path / "start").resolve())}
    held = [p["prompt_id"] for p in held_out_prompts(find_dataset("cmp-A", data_root))]
    assert held == [p["prompt_id"] for p in held_out_prompts(find_dataset("cmp-B", data_root))]
    assert results["held_out"]["prompt_ids"] == held and len(held) == 7  # all 7 test prompts of the demo set

    m = results["matchups"]
    assert list(m) == ["A vs B", "A vs base", "B vs base"]
    assert (m["A vs B"]["win"], m["A vs B"]["tie"], m["A vs B"]["loss"], m["A vs B"]["win_rate"]) == (7, 0, 0, 1.0)
    assert m["A vs base"]["win_rate"] == 1.0 and m["A vs base"]["order_agreement"] == 1.0
    assert (m["B vs base"]["tie"], m["B vs base"]["win_rate"]) == (7, 0.5)  # two constant students: no one wins
    assert m["A vs B"]["ci"][0] > 0.5  # 7 of 7 is a win with its interval above a coin flip
    assert (m["A vs B"]["model"], m["A vs B"]["baseline"]) == (results["arms"]["A"]["sft"], results["arms"]["B"]["sft"])

    # The judge saw every pair in both orders: 3 matchups x 7 prompts x 2 orders, each order once.
    assert len(judged) == 42
    orders = [tuple(dict(_CANDIDATE.findall(b["messages"][-1]["content"])).values()) for b in judged]
    for first, second in orders:
        assert (second, first) in orders
    assert sum(1 for o in orders if o[1] == CONSTANT and o[0] != BASE_CONSTANT) == 7  # A first, B second...
    assert sum(1 for o in orders if o[0] == CONSTANT and o[1] != BASE_CONSTANT) == 7  # ...and B first

    folder = Path(results["folder"])
    saved = json.loads((folder / "results.json").read_text())
    assert saved["matchups"]["A vs B"]["win_rate"] == 1.0 and saved["arms"]["A"]["cost"]["cost_per_prompt"] == 0.02
    assert saved["lengths"]["B"]["mean"] == len(CONSTANT)
    report = (folder / "report.md").read_text()
    assert "| A vs B | 7 | 0 | 0 | 0 | 100.0% [" in report and "| B vs base | 0 | 7 | 0 |" in report
    assert "weak" not in report  # the judge is not the embedded model
    assert sorted(p.name for p in (folder / "report").glob("*.png")) == ["cost.png", "lengths.png", "win_rates.png"]
    for name in ("win_rates.png", "cost.png", "lengths.png"):
        assert f"(report/{name})" in report
    lineage = read_lineage(folder)
    assert [(a["kind"], a.get("arm") or a.get("matchup")) for a in lineage["parents"]] == [
        ("dataset", "A"), ("sft", "A"), ("dataset", "B"), ("sft", "B"),
        ("eval", "A vs B"), ("eval", "A vs base"), ("eval", "B vs base")]  # fmt: skip
    assert lineage["summary"]["matchups"]["A vs B"]["win_rate"] == 1.0
    eval_ab = json.loads((folder / "eval-A-vs-B" / "results.json").read_text())
    assert {r["model_answer"][:21] for r in eval_ab["per_prompt"]} == {"Here is my answer to:"}
    assert read_lineage(folder / "eval-A-vs-B")["kind"] == "eval"


def test_a_judge_that_prefers_a_position_gives_ties(tmp_path: Path):
    results, _, judged, _ = compare_with_fakes(tmp_path, always_a)
    assert len(judged) == 42
    for m in results["matchups"].values():
        assert (m["tie"], m["win_rate"], m["order_agreement"]) == (7, 0.5, 0.0)


# ---------------------------------------------------------------- the whole flow (slow)


def longer_wins(request: dict) -> str | None:
    """The judge: the longer answer wins (the same in both orders); every other call gets the default reply."""
    if request["model"] != "judge-model":
        return None
    found = dict(_CANDIDATE.findall(request["messages"][-1]["content"]))
    a, b = len(found["A"]), len(found["B"])
    return json.dumps({"rationale": "length", "winner": "A" if a > b else "B" if b > a else "tie"})


def tiny_eval_settings(tmp_path: Path, base_url: str) -> Path:
    """eval.yaml for tiny students: the judge behind the test server, 6-token answers kept though cut."""
    eval_yaml = tmp_path / "eval.yaml"
    eval_yaml.write_text(yaml.safe_dump({
        "endpoints": {"judge": {"base_url": base_url, "model": "judge-model", "max_retries": 1}},
        "judge": {"endpoint": "judge", "temperature": 0.0}, "limit": None,
        "generation": {"temperature": 1.0, "max_tokens": 6, "seed": 0},
        "answers": {"truncated": "keep"}}))  # tiny random students rarely stop within 6 tokens  # fmt: skip
    return eval_yaml


@pytest.mark.slow
def test_compare_flow_on_the_test_server_with_tiny_students(tmp_path: Path, prefect_harness, monkeypatch):
    """Both arms' data from the pipeline (MoA of 3 + aggregator vs single), real LoRA SFT of a tiny model on
    each, the tiny students judged; then the same compare again costs no model call."""
    from tiny_models import build_tiny_causal_lm

    from flows.compare_flow import compare_arms

    monkeypatch.chdir(tmp_path)
    student = build_tiny_causal_lm(tmp_path / "student")
    with OpenAITestServer(responder=longer_wins) as server:
        run_config = tmp_path / "run.yaml"
        run_config.write_text(yaml.safe_dump(base_raw(tmp_path, server.base_url)))
        eval_yaml = tiny_eval_settings(tmp_path, server.base_url)
        settings = CompareSettings(data_config=str(run_config), prompts=8, test_size=TEST_SIZE, student=str(student),
                                   runs_root=str(tmp_path / "runs"), sft_config=str(ROOT / "configs/train/sft.yaml"),
                                   sft_overrides=TINY_SETTINGS, eval_config=str(eval_yaml))  # fmt: skip
        first = compare_arms(settings.model_dump())
        again = compare_arms(settings.model_dump())
        judged = [r for r in server.requests if r["body"] and r["body"].get("model") == "judge-model"]

    a, b = first["arms"]["A"], first["arms"]["B"]
    assert (a["dataset"], b["dataset"]) == ("test-run-A@v1", "test-run-B@v1")
    assert again["arms"]["A"]["dataset"] == "test-run-A@v1"  # the arm's data is up to date: no copy of it
    ids = {}
    for label, arm in (("A", a), ("B", b)):
        version = find_dataset(arm["dataset_path"])
        ids[label] = {split: sorted(load_rows(version, "sft", split, ["prompt_id"])["prompt_id"])
                      for split in ("train", "test")}  # fmt: skip
        assert read_lineage(arm["sft"])["parents"][0]["ref"] == arm["dataset"]
        assert json.loads((Path(arm["sft"]) / "metrics.json").read_text())["final"]["global_step"] == 2
    assert ids["A"] == ids["B"] and len(ids["A"]["train"]) + len(ids["A"]["test"]) == 8
    assert first["held_out"]["prompt_ids"] == ids["A"]["test"] and first["held_out"]["n"] == 4
    assert (a["cost"]["calls_per_prompt"], b["cost"]["calls_per_prompt"]) == (4.0, 1.0)  # 3 proposers + aggregator
    assert a["cost"]["tokens_per_prompt"] > b["cost"]["tokens_per_prompt"]
    for m in first["matchups"].values():
        assert m["win"] + m["tie"] + m["loss"] + m["unjudged"] == 4 and m["order_agreement"] == 1.0
    assert len(judged) == 2 * 2 * 3 * 4  # two compares x 3 matchups x 4 prompts x 2 orders
    # Arm B's single answers are the requests of arm A's first proposer in layer 1 (same messages, sampling,
    # seed): the cache answers them even the first time; a second compare makes no data call at all.
    assert (a["cost"]["new_calls"], b["cost"]["new_calls"]) == (32, 0)
    assert [r["cost"]["new_calls"] for r in again["arms"].values()] == [0, 0]
    assert again["matchups"]["A vs B"]["scores"] == first["matchups"]["A vs B"]["scores"]
    assert (Path(first["folder"]) / "report.md").is_file() and read_lineage(first["folder"])["kind"] == "compare"
