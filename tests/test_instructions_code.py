"""The instruction stage's with-tests family (instructions.code_share): writers write a Python function task
with `assert` tests, the answerers see its signature but not the tests, and the tests become the task's
reference only when the consensus answer passes them in moaa.verify's sandbox. Against the OpenAI test
server (real HTTP on 127.0.0.1), whose responder here plays the writers and every answering agent."""

from __future__ import annotations

import json

import pytest

from moaa.errors import MoaaError
from moaa.instructions.seeds import load_seeds
from moaa.instructions.writer_replies import FunctionSpec, parse_function_tasks, read_function
from moaa.prompts.instructions import EOS
from moaa.testing.instruction_replies import WRITER_MARK
from moaa.testing.openai_replies import message_text
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import base_raw, make_config
from tests.pipeline_helpers import latest_version, version_rows
from tests.test_instructions_pipeline import run_cli_in_process

# name: (instruction, signature, tests, a right solution, a wrong one)
FUNCTIONS = {
    "sum_squares": (
        "Write a function that returns the sum of the squares of the whole numbers from 1 to n.",
        "def sum_squares(n: int) -> int",
        ["assert sum_squares(1) == 1", "assert sum_squares(3) == 14", "assert sum_squares(0) == 0"],
        "def sum_squares(n: int) -> int:\n    return sum(k * k for k in range(1, n + 1))",
        "def sum_squares(n: int) -> int:\n    return n * n",
    ),
    "is_palindrome": (
        "Write a function that tells whether a string reads the same backwards as forwards, ignoring case.",
        "def is_palindrome(text: str) -> bool",
        ["assert is_palindrome('Level') is True", "assert is_palindrome('abc') is False", "assert is_palindrome('')"],
        "def is_palindrome(text: str) -> bool:\n    return text.lower() == text.lower()[::-1]",
        "def is_palindrome(text: str) -> bool:\n    return text == text[::-1]",
    ),
}


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def task_block(name: str, tests: list[str] | None = None) -> str:
    instruction, signature, right_tests, right, _ = FUNCTIONS[name]
    lines = "\n".join(tests if tests is not None else right_tests)
    return (
        f"instruction: {instruction}\nsignature: {signature}\noutput:\n{fenced(right)}\ntests:\n{fenced(lines)}\n{EOS}"
    )


def responder(answers: str = "right", reply: str | None = None):
    """A writer's call gets both tasks (or `reply`); any call that shows a task's signature gets its right
    (or wrong) solution, the same text from every agent, so the answerers agree exactly."""

    def respond(request: dict) -> str | None:
        texts = [message_text(m.get("content")) for m in request.get("messages") or []]
        if WRITER_MARK in texts[-1]:
            assert "`signature:`" in texts[-1] and "assert second_largest(" in texts[-1]  # shown with-tests seeds
            return reply if reply is not None else "\n\n".join(task_block(name) for name in FUNCTIONS)
        for _, signature, tests, right, wrong in FUNCTIONS.values():
            if any(f"`{signature}`" in text for text in texts):
                assert not any(test in text for text in texts for test in tests)  # the tests are never shown
                return f"Here it is:\n\n{fenced(right if answers == 'right' else wrong)}"
        return None

    return respond


def with_tests(tmp_path, base_url: str, n: int, **instructions) -> dict:
    raw = base_raw(tmp_path, base_url) | {"prompts": {"limit": None}}
    return raw | {"instructions": {"n": n, "checkable_share": 0, "code_share": 1.0, **instructions}}


def dropped(tmp_path, answers: str, reply: str | None = None) -> list[dict]:
    """The named drops of a batch that keeps nothing (synthesize stops with one line naming their file)."""
    from moaa.instructions.batches import synthesize

    with OpenAITestServer(responder=responder(answers, reply)) as srv:
        raw = with_tests(tmp_path, srv.base_url, 1, max_rounds=1)
        config = make_config(tmp_path, srv.base_url, prompts=raw["prompts"], instructions=raw["instructions"])
        with pytest.raises(MoaaError, match=r"instructions: no task kept in 1 rounds") as err:
            synthesize(config)
    named = str(err.value).split("each named in ")[1].split(");")[0]
    return [json.loads(line) for line in open(named)]


def test_kept_function_tasks_carry_their_tests_and_the_sft_stage_runs_them(tmp_path, prefect_harness, monkeypatch):
    with OpenAITestServer(responder=responder("right")) as srv:
        config = with_tests(tmp_path, srv.base_url, 2)
        config["sft"]["verify"] = "keep"
        assert run_cli_in_process(tmp_path, monkeypatch, config) == 0
    version = latest_version(tmp_path / "data")
    prompts = {r["prompt_id"]: r for r in version_rows(version, "prompts")}
    by_name = {row["prompt"].split("`def ")[1].split("(")[0]: row for row in prompts.values()}
    assert sorted(by_name) == sorted(FUNCTIONS)
    for name, row in by_name.items():
        instruction, signature, tests, _, _ = FUNCTIONS[name]
        assert row["category"] == "with-tests" and row["instruction"] == instruction
        asked = f"Write it as one Python function with the signature `{signature}`, in a ```python code block."
        assert row["prompt"] == f"{instruction} {asked}"
        assert json.loads(row["reference"]) == {"tests": tests}  # language python: the default, left out
    sft = version_rows(version, "sft")
    assert sorted(r["prompt_id"] for r in sft) == sorted(prompts)
    for row in sft:
        assert json.loads(row["reference"]) == json.loads(prompts[row["prompt_id"]]["reference"])
        verification = row["verification"]
        assert verification["checks"] == ["tests"] and verification["status"] == "pass", verification


def test_answers_that_fail_the_writers_tests_drop_the_task_as_reference_disputed(tmp_path):
    rows = dropped(tmp_path, "wrong")
    disputed = [r for r in rows if r["reason"] == "reference_disputed"]
    assert len(disputed) == 2 and {r["reason"] for r in rows} <= {"reference_disputed", "similar_to_earlier"}
    errors = sorted(r["error"] for r in disputed)
    assert "does not pass the writer's tests of is_palindrome(): 2 of 3 tests passed; test 1" in errors[0]
    assert "does not pass the writer's tests of sum_squares(): 2 of 3 tests passed; test 2" in errors[1]


@pytest.mark.parametrize(
    ("reply", "reason", "detail"),
    [
        ("Here are some functions: sum_squares, is_palindrome.", "unparsable", "holds no task in the examples' format"),
        (task_block("sum_squares", ["assert sum_squares(1) == 1"]), "unparsable_tests", "1 test lines under `tests:`"),
        (task_block("sum_squares").replace("def sum_squares(n: int) -> int\n", "sum_squares(n)\n", 1),
         "unparsable_tests", "the signature 'sum_squares(n)' is not one line `def name(parameters) -> type`"),
    ],
)  # fmt: skip
def test_a_writer_reply_that_does_not_parse_is_a_named_drop(tmp_path, reply, reason, detail):
    rows = dropped(tmp_path, "right", reply)
    assert {r["reason"] for r in rows} - {"similar_to_earlier"} == {reason}
    assert all(detail in r["error"] for r in rows if r["reason"] == reason)


def test_tests_that_do_not_even_run_are_disputed_too(tmp_path):
    broken = ["assert sum_squares(1) == 1", "assert sum_squares(3) == = 14", "assert sum_squares(0) == 0"]
    rows = dropped(tmp_path, "right", task_block("sum_squares", broken))
    assert {r["reason"] for r in rows} - {"similar_to_earlier"} == {"reference_disputed"}
    (disputed,) = [r for r in rows if r["reason"] == "reference_disputed"]
    assert "2 of 3 tests passed; test 2 `assert sum_squares(3) == = 14`: SyntaxError" in disputed["error"]


def test_read_function_is_strict():
    fenced_tests = "```python\nassert f(1) == 1\nassert f(2) == 2\nassert f(0)\n```"
    assert read_function("`def f(x: int) -> int:`", fenced_tests) == FunctionSpec(
        "def f(x: int) -> int", "f", ("assert f(1) == 1", "assert f(2) == 2", "assert f(0)")
    )
    tests = "assert f(1) == 1\nassert f(2) == 2\nassert f(3) == 3"
    assert read_function("", tests) == "no `signature:` line"
    assert read_function("def f(x:", tests).startswith("the signature 'def f(x' is not one line")
    assert read_function("class F", tests).startswith("the signature 'class F' is not one line")
    assert read_function("def f(x)", tests + "\nprint(f(4))") == "test line 4 is not an `assert`: 'print(f(4))'"
    assert read_function("def f(x)", tests.replace("f(3)", "g(3)")) == "test 3 does not call f(): 'assert g(3) == 3'"
    assert read_function("def f(x)", "\n".join([tests] * 3)).startswith("9 test lines")
    reply = json.dumps({"tasks": [{"instruction": "Add one.", "signature": "def f(x)", "output": "x", "tests": tests}]})
    assert parse_function_tasks(reply) == [("Add one.", "x", FunctionSpec("def f(x)", "f", tuple(tests.split("\n"))))]


def test_the_shipped_with_tests_seeds_pass_their_own_tests():
    import asyncio

    from moaa.config import VerifyConfig
    from moaa.instructions.batches import SHIPPED_SEEDS
    from moaa.rows import Prompt, Reference
    from moaa.verify.checks import Verifier

    seeds = [s for s in load_seeds(SHIPPED_SEEDS) if s.tests]
    assert len(seeds) == 4 and all(s.signature and not s.answer and not s.input for s in seeds)
    verifier = Verifier(VerifyConfig())
    for seed in seeds:
        assert isinstance(read_function(seed.signature, "\n".join(seed.tests)), FunctionSpec)
        prompt = Prompt(seed.id, [{"role": "user", "content": seed.instruction}], "t", "c", Reference(tests=seed.tests))
        verdict = asyncio.run(verifier.check(prompt, fenced(seed.output)))
        assert verdict.status == "pass", (seed.id, verdict.reason)
