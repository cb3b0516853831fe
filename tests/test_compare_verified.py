"""`make compare --verified`: the students scored by held-out pass rate, their answers to the test-split
prompts that carry a reference checked, beside the judge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moaa.dataset.files import split_of
from moaa.errors import InputError
from moaa.rows import prompt_id_of
from moaa.testing.openai_server import OpenAITestServer
from moaa.train.comparison_report import format_summary
from moaa.train.pass_rates import pass_rate_table, score_students, verifiable_held_out
from moaa.train.winrate import wilson_interval
from tests.conftest import make_config
from tests.verify_helpers import write_source

QUESTIONS = {f"What is {a} + {b}? Give the number.": a + b for a, b in zip(range(1, 41), range(3, 43), strict=True)}


def held(questions: dict[str, int]) -> list[str]:
    """The questions a test_size of 0.5 (seed 0) holds out, as moaa decides it: per prompt_id."""
    return [q for q in questions if split_of(prompt_id_of([{"role": "user", "content": q}]), 0.5, 0) == "test"]


def responder(request: dict) -> str | None:
    """Student models: 'good' is always right, 'bad' never, 'base' right on the first five held-out questions."""
    question = request["messages"][-1]["content"]
    if question not in QUESTIONS:
        return None
    if request["model"] == "rambler":  # right, but never finishes within any budget
        return f"It is {QUESTIONS[question]}, because " + "step " * 5000 + "."
    right = {"good": True, "bad": False, "base": question in held(QUESTIONS)[:5]}[request["model"]]
    return f"It is {QUESTIONS[question] if right else -1}."


def test_each_student_gets_a_pass_rate_with_its_interval_and_the_pairs_discordant_counts(tmp_path: Path):
    rows = [{"prompt": q, "answer": str(a)} for q, a in QUESTIONS.items()] + [{"prompt": "Say hi."}]
    source = write_source(tmp_path / "sums.jsonl", rows)
    with OpenAITestServer(responder=responder) as srv:
        config = make_config(tmp_path, srv.base_url, "output.test_size=0.5", prompts={"path": str(source)})
        eval_yaml = tmp_path / "eval.yaml"
        eval_yaml.write_text(yaml.safe_dump({
            "endpoints": {name: {"base_url": srv.base_url, "model": name, "max_retries": 1}
                          for name in ("good", "bad", "base", "rambler")},
            "judge": {"endpoint": "good"},
            "generation": {"temperature": 0.0, "max_tokens": 16, "seed": 0}}))  # fmt: skip
        scores = score_students(
            students={"A": "good", "B": "bad", "base": "base", "R": "rambler"}, config=config,
            pairs=[("A", "B"), ("B", "base")], out=tmp_path / "out", eval_config=eval_yaml,
        )  # fmt: skip
    n = len(held(QUESTIONS))
    assert scores["n"] == n and 10 < n < 30  # "Say hi." has no reference: not scored
    assert [scores["students"][k]["passed"] for k in ("A", "B", "base", "R")] == [n, 0, 5, 0]  # R never finished
    assert scores["students"]["base"]["ci"] == list(wilson_interval(5, n))
    assert scores["pairs"]["A vs B"] == {"only_model": n, "only_baseline": 0, "both": 0, "neither": 0}
    assert scores["pairs"]["B vs base"] == {"only_model": 0, "only_baseline": 5, "both": 0, "neither": n - 5}
    table = pass_rate_table(scores)
    assert f"| A | {n}/{n} | 100.0% [" in table and f"| B vs base | 0 | 5 | 0 | {n - 5} |" in table


def test_a_prompt_set_without_checkable_held_out_prompts_fails_before_any_training(tmp_path: Path):
    source = write_source(tmp_path / "plain.jsonl", [{"prompt": f"Tell me about {i}."} for i in range(20)])
    config = make_config(tmp_path, "http://127.0.0.1:9/v1", prompts={"path": str(source)})
    with pytest.raises(InputError, match="no held-out prompt carries a reference"):
        verifiable_held_out(config)


def test_the_summary_shows_the_pass_rates_beside_the_judge():
    results = {
        "name": "cmp", "student": "/m/student", "held_out": {"n": 2, "prompt_ids": ["a", "b"]},
        "judge": {"model": "judge", "endpoint": "judge"}, "matchups": {
            "A vs B": {"win": 1, "tie": 1, "loss": 0, "unjudged": 0, "win_rate": 0.75, "ci": [0.2, 0.9],
                       "lc_win_rate": 0.7, "order_agreement": 1.0}},
        "arms": {label: {"describe": label, "dataset": f"x-{label}@v1", "cost": {
            "rows": 2, "calls_per_prompt": 1.0, "tokens_per_prompt": 10, "cost_per_prompt": 0.0, "new_calls": 0}}
            for label in "AB"},
        "verified": {"n": 4, "prompt_ids": list("abcd"), "pairs": {},
                     "students": {"A": {"passed": 3, "n": 4, "pass_rate": 0.75, "ci": [0.3, 0.95]}}},
    }  # fmt: skip
    text = format_summary(results)
    assert "held-out pass rate (4 prompts with a reference, each answer checked):" in text
    assert "| A | 3/4 | 75.0% [30.0%, 95.0%] |" in text


def test_run_compare_with_verified_scores_the_three_students_on_arm_as_prompts(tmp_path: Path):
    from moaa.train.comparison import CompareSettings, run_compare
    from tests.test_compare import LOCAL, FakeSteps

    start = tmp_path / "start"
    start.mkdir()
    (start / "config.json").write_text("{}")
    fake, asked = FakeSteps(tmp_path, clients=None), {}
    matchup = {"win": 1, "tie": 0, "loss": 0, "unjudged": 0, "win_rate": 1.0, "ci": [0.2, 1.0], "lc_win_rate": 1.0,
               "order_agreement": 1.0, "eval": str(tmp_path / "eval"), "model": "a", "baseline": "b"}  # fmt: skip

    def evaluate(**kw):
        return {"held_out": {"n": 1, "prompt_ids": ["x"]}, "judge": {"model": "j", "endpoint": "j"},
                "matchups": {"A vs B": matchup, "A vs base": matchup, "B vs base": matchup},
                "lengths": {}, "answer_chars": {}}  # fmt: skip

    def pass_rates(**kw):
        asked.update(kw)
        return {
            "n": 1,
            "prompt_ids": ["x"],
            "pairs": {},
            "students": {
                label: {"passed": 1, "n": 1, "pass_rate": 1.0, "ci": [0.2, 1.0]} for label in ("A", "B", "base")
            },
        }

    steps = fake.steps()
    steps.evaluate, steps.pass_rates = evaluate, pass_rates
    data = [f"output.root={tmp_path / 'data'}", "prompts.path=configs/prompts/verified.jsonl"]
    s = CompareSettings(name="cmp", data_config=LOCAL, data_overrides=data, student=str(start), prompts=30,
                        runs_root=str(tmp_path / "runs"), verified=True)  # fmt: skip
    results = run_compare(s, steps)
    assert set(asked["students"]) == {"A", "B", "base"} and asked["pairs"] == [("A", "B"), ("A", "base"), ("B", "base")]
    assert asked["config"]["prompts"]["path"] == "configs/prompts/verified.jsonl" and asked["config"]["name"] == "cmp-A"
    assert results["verified"]["students"]["A"]["pass_rate"] == 1.0
    assert "## Held-out pass rate" in Path(results["report"]).read_text()
