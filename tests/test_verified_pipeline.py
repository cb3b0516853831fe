"""The whole pipeline on a JSONL of {"instruction", "tests"} and {"instruction", "answer"} rows, with no
setting for verification at all: every written row is re-checked here, independently of the verdicts
the pipeline wrote, and the summary prints the counts."""

from __future__ import annotations

from moaa.rows import Reference, prompt_id_of
from moaa.testing.openai_server import OpenAITestServer
from moaa.work.summary import format_summary
from tests.conftest import make_config
from tests.pipeline_helpers import version_rows
from tests.test_pipeline import run
from tests.verify_helpers import Script, Tutor, python, recheck, write_source

ADD = "Write a Python function add(a, b) that returns a + b."
MAX3 = "Write a Python function max3(a, b, c) that returns the largest of three numbers."
CLIPS = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?"
APPLES = "Tom has 5 apples and eats 2. How many are left?"
TRIANGLE = "The angles of a triangle are in the ratio 2:3:4. What is the size of the largest angle in degrees?"
ROWS = [
    {"instruction": ADD, "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]},
    {"instruction": MAX3, "tests": "assert max3(1, 2, 3) == 3\nassert max3(3, 2, 1) == 3\nassert max3(2, 3, 1) == 3"},
    {"instruction": CLIPS, "answer": "In May she sold 48 / 2 = 24.\nIn all 48 + 24 = 72.\n#### 72"},
    {"instruction": APPLES, "answer": "3"},
    {"instruction": TRIANGLE, "answer": "80"},
    {"instruction": "Say hello in French."},
]
WRONG_MAX = python("def max3(a, b, c):\n    return a if a > b else b")
SCRIPTS = {
    # right at once
    ADD: Script([python("def add(a, b):\n    return a + b")] * 3, python("def add(a, b):\n    return b + a")),
    # wrong aggregate, right after the re-ask
    MAX3: Script([WRONG_MAX] * 3, WRONG_MAX + "Done.", reask=python("def max3(a, b, c):\n    return max(a, b, c)")),
    CLIPS: Script(["72", "She sold 72 clips.", "70"], "She sold 72 clips in all."),
    # the aggregate and its re-ask wrong, one proposal right
    APPLES: Script(["7", "There are 3 left.", "2"], "7 apples.", reask="Still 7."),
    # everything wrong: the triangle
    TRIANGLE: Script(["9", "4", "25/3"], "The largest angle is 9 degrees.", reask="It is 9."),
}


def test_only_verified_answers_become_rows_and_the_summary_counts_them(tmp_path, prefect_harness):
    source = write_source(tmp_path / "checkable.jsonl", ROWS)
    references = {prompt_id_of([{"role": "user", "content": r["instruction"]}]): r for r in ROWS}
    roles = [f"sft.proposers.{i}.role=p{i}" for i in range(3)]
    with OpenAITestServer(responder=Tutor(SCRIPTS)) as srv:
        # the prompt source as a user writes it: a path, every other setting its default
        config = make_config(tmp_path, srv.base_url, *roles, prompts={"path": str(source)})
        summary = run(config)
    rows = version_rows(summary["version_path"], "sft")
    assert len(rows) == 5  # the triangle is an `unverified` failure
    for row in rows:  # the hidden check: no row whose prompt has a reference fails it
        raw = references[row["prompt_id"]]
        reference = Reference.from_dict({k: v for k, v in raw.items() if k in ("answer", "tests")})
        assert row["reference"] == (reference.to_json() if reference.kinds else None)  # kept for RLVR-style training
        expected = "pass" if reference.kinds else "none"
        assert recheck(reference, row["messages"][-1]["content"]) == expected, row
    how = {references[r["prompt_id"]]["instruction"]: (r["verification"] or {}).get("answer") for r in rows}
    assert how == {ADD: "final", MAX3: "reask", CLIPS: "final", APPLES: "proposal", "Say hello in French.": None}
    failures = version_rows(summary["version_path"], "failures")
    assert [(f["reason"], f["transient"]) for f in failures] == [("unverified", False)]
    text = format_summary(summary)
    assert (
        "verification (sft): moa: 5 prompts checked, 4 verified (80%: 2 at first, 1 after a re-ask, 1 from a "
        "proposal), 1 failed (dropped as unverified), 0 unverifiable; 1 without a check"
    ) in text
    card = (tmp_path / "data" / "test-run" / summary["version"] / "README.md").read_text()
    assert "## Verification" in card and "4 verified (80%" in card


SAMPLES = {
    ADD: [python("def add(a, b):\n    return a + b"), python("def add(a, b):\n    return a * b")],
    MAX3: [python("def max3(a, b, c):\n    return max(a, b, c)"), WRONG_MAX],
    CLIPS: ["She sold 72 clips.", "She sold 24 clips."],
    APPLES: ["2 apples", "5 apples"],  # both wrong: no pair
    TRIANGLE: ["It is 80 degrees.", "The largest is 80."],  # both right: the judge (ratings 3, 5) pairs them
}


def test_no_dpo_chosen_side_fails_its_check(tmp_path, prefect_harness):
    from tests.pipeline_helpers import verdict_responder

    source = write_source(tmp_path / "checkable.jsonl", ROWS)
    references = {prompt_id_of([{"role": "user", "content": r["instruction"]}]): r for r in ROWS}
    tutor = Tutor({q: Script(s.proposals, s.aggregate, s.reask, SAMPLES[q]) for q, s in SCRIPTS.items()})

    def respond(request: dict):
        return verdict_responder(request) or tutor(request)

    overrides = [f"sft.proposers.{i}.role=p{i}" for i in range(3)] + [
        "preference.enabled=true",
        "preference.policy={endpoint: test, role: policy, temperature: 1.0}", "preference.samples=2",
        "preference.scorer={kind: verifier, judges: [{endpoint: test}]}", "preference.min_margin=0",
    ]  # fmt: skip
    with OpenAITestServer(responder=respond) as srv:
        summary = run(make_config(tmp_path, srv.base_url, *overrides, prompts={"path": str(source)}))
    pairs = version_rows(summary["version_path"], "dpo")
    for pair in pairs:  # the hidden check, on the chosen side
        raw = references[pair["prompt_id"]]
        reference = Reference.from_dict({k: v for k, v in raw.items() if k in ("answer", "tests")})
        assert recheck(reference, pair["chosen"][0]["content"]) in ("pass", "none"), pair
    rejected = {references[p["prompt_id"]]["instruction"]: (p["verification"] or {}).get("rejected") for p in pairs}
    assert {q: v and v["status"] for q, v in rejected.items()} == {
        ADD: "fail", MAX3: "fail", CLIPS: "fail", TRIANGLE: "pass", "Say hello in French.": None,
    }  # fmt: skip
    dropped = summary["stages"]["preference"]["dropped"]
    assert dropped.get("all_failed") == 1  # the apples
    assert (
        "verification (preference): 10 candidates checked: 5 passed, 5 failed, 0 unverifiable; 3 pairs "
        "chosen-passes/rejected-fails; 1 judged among passing answers; 1 prompt without a check"
    ) in format_summary(summary)
