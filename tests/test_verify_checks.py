"""The checks behind a verdict: final answers, code extraction, IFEval constraints, SQL, your own check,
and the Verifier that runs them in check workers."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from moaa.config import VerifyConfig
from moaa.rows import Prompt, Reference
from moaa.verify import Verdict, Verifier, combine, failed, passed, unverifiable
from moaa.verify.answer import check_answer
from moaa.verify.code_tests import split_tests
from moaa.verify.constraints import check_constraints
from moaa.verify.extract import code_of, sql_of
from moaa.verify.sql import check_sql
from moaa.verify.worker import check_workers

# ---------------------------------------------------------------- final answers (math-verify)


@pytest.mark.parametrize(
    "reference, text, status",
    [
        ("80", "The largest angle is 80 degrees.", "pass"),
        ("80", "So the angles are 40, 60 and $80^\\circ$.", "pass"),
        ("80", "The largest angle is 9°.", "fail"),
        ("She sold 48 + 24 = 72 clips in all.\n#### 72", "Natalia sold 72 clips.", "pass"),
        ("#### 1,250", "The total is 1250 dollars.", "pass"),
        ("\\frac{3}{4}", "The probability is 0.75.", "pass"),
        ("18", "The sale price is \\boxed{18}.", "pass"),
        ("18", "It costs a lot.", "fail"),
    ],
)
def test_final_answers_are_compared_with_math_verify(reference, text, status):
    assert check_answer(reference, text).status == status


def test_a_wrong_final_answer_names_both_sides():
    verdict = check_answer("80", "Three parts: 2x + 3x + 4x = 180, so the largest is 9.")
    assert verdict.reason == "final answer 9 does not match the reference 80"
    assert verdict.details == {"answer": "9", "reference": "80"}


def test_a_prose_reference_without_a_final_answer_is_unverifiable_not_guessed():
    prose = "The French Revolution began in 1789 for many reasons, " * 4
    verdict = check_answer(prose, "It began in 1789.")
    assert verdict.status == "unverifiable" and "without a #### or \\boxed final answer" in verdict.reason


# ---------------------------------------------------------------- code in answers


def test_code_is_read_from_the_answers_python_blocks_in_order():
    text = textwrap.dedent(
        """\
        ```python
        def double(x):
            return 2 * x
        ```
        Example:
        ```
        print(double(2))
        ```
        ```python
        >>> double(3)
        6
        ```
        ```bash
        python double.py
        ```
        """
    )
    assert code_of(text, "python") == "def double(x):\n    return 2 * x\n\nprint(double(2))\n"


def test_an_answer_without_a_block_is_code_only_when_all_of_it_parses():
    assert code_of("def f():\n    return 1", "python") == "def f():\n    return 1\n"
    assert code_of("The function returns one.", "python") is None
    assert code_of("Hello", "python") is None  # a bare name parses, but is no code


def test_sql_is_the_last_sql_block_or_a_bare_query():
    assert sql_of("```sql\nSELECT 1;\n```\nfixed:\n```sql\nSELECT 2;\n```") == "SELECT 2;"
    assert sql_of("SELECT name FROM t") == "SELECT name FROM t"
    assert sql_of("Use a GROUP BY.") is None


def test_a_string_of_asserts_is_split_into_tests_with_their_setup():
    tests = split_tests(("import math\nassert f(1) == 1\nx = 2\nassert f(x) == 4",), "python")
    assert tests == ["import math\nassert f(1) == 1", "x = 2\nassert f(x) == 4"]
    humaneval = "def check(candidate):\n    assert candidate(1) == 1\ncheck(f)"
    assert split_tests((humaneval,), "python") == [humaneval]


# ---------------------------------------------------------------- IFEval / IFBench constraints


def test_constraints_pass_fail_and_score_by_instruction():
    ids = ["punctuation:no_comma", "length_constraints:number_words", "startend:end_checker"]
    kwargs = [{}, {"num_words": 5, "relation": "less than"}, {"end_phrase": "Bye."}]
    assert check_constraints(ids, kwargs, "p", "Four words then Bye.").status == "pass"
    verdict = check_constraints(ids, kwargs, "p", "Too, many words in this one here")
    assert verdict.status == "fail" and verdict.score == 0.0
    assert verdict.reason == (
        "3 of 3 instructions not followed: punctuation:no_comma, length_constraints:number_words, startend:end_checker"
    )
    assert check_constraints(ids, kwargs, "p", "Two, Bye.").score == pytest.approx(2 / 3)


def test_ifbench_instructions_are_checked_too():
    verdict = check_constraints(["count:word_count_range"], [{"min_words": 2, "max_words": 4}], "p", "a b c")
    assert verdict.status == "pass"


def test_a_constraint_that_cannot_be_checked_says_why():
    unknown = check_constraints(["keywords:nonsense"], [{}], "p", "x")
    assert unknown.status == "unverifiable"
    assert unknown.reason == "keywords:nonsense: not an IFEval or IFBench instruction id"
    missing = check_constraints(["keywords:existence"], [{}], "p", "x")
    assert missing.reason == "keywords:existence: kwargs keywords not given"  # never drawn at random


def test_sentence_counts_need_nltk_data_and_say_so_offline():
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        pytest.skip("NLTK's punkt data is installed here")
    except LookupError:
        pass
    args = [{"num_sentences": 2, "relation": "at least"}]
    verdict = check_constraints(["length_constraints:number_sentences"], args, "p", "One. Two.")
    assert verdict.status == "unverifiable"
    assert verdict.reason == "length_constraints:number_sentences: needs NLTK's punkt_tab data, not installed"


# ---------------------------------------------------------------- SQL on SQLite

ORDERS = """
CREATE TABLE orders(customer_id INTEGER, amount REAL, created_at TEXT);
INSERT INTO orders VALUES (1, 10, '2024-01-01'), (1, 5, '2024-01-02'), (2, 40, '2024-01-03'),
  (3, 7, '2024-01-04'), (4, 1, '2024-01-05'), (5, 30, '2024-01-06'), (6, 22, '2024-01-07');
"""
TOP = "SELECT customer_id, SUM(amount) FROM orders GROUP BY customer_id ORDER BY SUM(amount) DESC LIMIT 3"


@pytest.mark.parametrize(
    "query, status, reason",
    [
        ("SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY 1 ORDER BY total DESC LIMIT 3",
         "pass", "3 rows match the reference in order"),
        ("SELECT SUM(amount) AS total, customer_id FROM orders GROUP BY 2 ORDER BY 1 DESC LIMIT 3",
         "pass", "3 rows match the reference in order"),
        ("SELECT customer_id, SUM(amount) FROM orders GROUP BY 1 ORDER BY 2 LIMIT 3", "fail",
         "the rows differ from the reference (row 1 is [4, 1.0], expected [2, 40])"),
        ("SELECT customer_id, created_at, SUM(amount) FROM orders GROUP BY customer_id ORDER BY 3 DESC LIMIT 3",
         "fail", "returned 3 columns, expected 2"),
        ("SELECT customer_id FROM orderz", "fail", "the query fails on SQLite: no such table: orderz"),
        ("DELETE FROM orders", "fail", "the query fails on SQLite: attempt to write a readonly database"),
    ],
)  # fmt: skip
def test_the_answers_query_runs_on_the_fixture_and_its_rows_are_compared(query, status, reason):
    verdict = check_sql(Reference(sql=TOP, schema=ORDERS), f"```sql\n{query}\n```", 5)
    assert (verdict.status, verdict.reason) == (status, reason)


def test_a_mismatch_names_the_first_row_that_differs_not_just_the_first_row():
    # make data's customers query: a bare `amount` beside GROUP BY, right for a one-order customer only
    reference = Reference(rows=((1, 15), (2, 40)), schema=ORDERS, ordered=True)
    bare = "SELECT customer_id, amount FROM orders WHERE customer_id IN (1, 2) GROUP BY customer_id ORDER BY 1"
    verdict = check_sql(reference, bare, 5)
    assert verdict.reason in (
        "the rows differ from the reference (row 1 is [1, 10.0], expected [1, 15])",
        "the rows differ from the reference (row 1 is [1, 5.0], expected [1, 15])",
    )  # SQLite picks the bare column's row
    unordered = check_sql(Reference(rows=((2, 40), (1, 15)), schema=ORDERS), bare, 5)
    assert unordered.reason.startswith("the rows differ from the reference (it returned [1, ")


def test_expected_rows_stand_in_for_a_reference_query_and_order_counts_only_when_asked():
    reference = Reference(rows=((2, 40), (5, 30), (6, 22)), schema=ORDERS)
    reversed_order = "SELECT customer_id, SUM(amount) FROM orders GROUP BY 1 ORDER BY 2 ASC LIMIT 3 OFFSET 3"
    assert check_sql(reference, reversed_order, 5).status == "pass"
    ordered = Reference(rows=((2, 40), (5, 30), (6, 22)), schema=ORDERS, ordered=True)
    assert check_sql(ordered, reversed_order, 5).reason == "the rows are right but not in the expected order"


def test_a_runaway_query_fails_at_the_time_limit():
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    verdict = check_sql(Reference(sql=TOP, schema=ORDERS), endless, 0.5)
    assert verdict.reason == "the query fails on SQLite: the query ran longer than 0.5 s"


# ---------------------------------------------------------------- verdicts combined


def test_a_fail_wins_an_unverifiable_check_leaves_the_answer_unproven():
    ok, bad, unknown = passed("fine", "answer"), failed("wrong", "tests", 0.5), unverifiable("no node", "sql")
    assert combine([ok, bad]).status == "fail" and combine([ok, bad]).reason == "tests: wrong"
    assert combine([ok, unknown]).status == "unverifiable"
    both = combine([ok, passed("all", "tests")])
    assert (both.status, both.score, both.checks) == ("pass", 1.0, ("answer", "tests"))


# ---------------------------------------------------------------- the Verifier and its workers

OWN_CHECK = """
import time
from moaa.verify import Verdict

def is_json(answer, prompt):
    import json
    try:
        json.loads(answer)
    except ValueError as exc:
        return False, f"not JSON: {exc.msg}"
    return True

def slow(answer, prompt):
    time.sleep(30)

def rich(answer, prompt):
    return Verdict("pass", "looks right", 0.9, ("whatever",), {"seen": prompt.prompt_id})
"""


@pytest.fixture
def own_checks(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(OWN_CHECK)
    monkeypatch.syspath_prepend(str(tmp_path))
    check_workers(1).close()  # workers started before take this sys.path
    yield
    check_workers(1).close()


def run(verifier: Verifier, prompt: Prompt, text: str) -> Verdict | None:
    return asyncio.run(verifier.check(prompt, text))


def prompt(reference: Reference | None = None) -> Prompt:
    return Prompt("p1", [{"role": "user", "content": "q"}], reference=reference)


def test_a_prompt_without_reference_or_own_check_gets_no_verdict():
    assert run(Verifier(VerifyConfig()), prompt(), "anything") is None


def test_answer_and_tests_of_one_reference_make_one_verdict():
    reference = Reference(answer="4", tests=("assert double(2) == 4",))
    text = "```python\ndef double(x):\n    return 2 * x\n```\nSo double(2) is 4."
    verdict = run(Verifier(VerifyConfig()), prompt(reference), text)
    assert verdict is not None and (verdict.status, verdict.checks) == ("pass", ("answer", "tests"))


def test_your_own_check_runs_for_every_prompt(own_checks):
    verifier = Verifier(VerifyConfig(check="my_checks:is_json"))
    assert run(verifier, prompt(), '{"a": 1}') == Verdict("pass", "my_checks:is_json passed it", 1.0, ("own",))
    verdict = run(verifier, prompt(), "{a: 1}")
    assert (verdict.status, verdict.reason) == ("fail", "not JSON: Expecting property name enclosed in double quotes")
    rich = run(Verifier(VerifyConfig(check="my_checks:rich")), prompt(), "x")
    assert (rich.reason, rich.score, rich.checks, rich.details) == ("looks right", 0.9, ("own",), {"seen": "p1"})


def test_a_check_past_its_time_limit_is_unverifiable_and_its_worker_replaced(own_checks):
    verifier = Verifier(VerifyConfig(check="my_checks:slow", timeout_s=0.5))
    verdict = run(verifier, prompt(), "x")
    assert (verdict.status, verdict.reason) == ("unverifiable", "the check ran longer than 2 s")
    fast = Verifier(VerifyConfig(check="my_checks:is_json"))
    assert run(fast, prompt(), "1").status == "pass"  # a new worker answers


def test_a_check_that_cannot_be_imported_stops_at_once_with_one_line():
    from moaa.errors import ConfigError

    with pytest.raises(ConfigError, match="verify.check: cannot import 'no_such_module'"):
        Verifier(VerifyConfig(check="no_such_module:f"))


def test_a_request_that_cannot_be_sent_gives_its_worker_back():
    """A check that raises (here: a request JSON cannot carry) must not keep the pool's only worker:
    the next check would wait for it forever (make compare --verified hung so)."""
    import threading

    from moaa.verify.worker import CheckWorkers

    pool = CheckWorkers(1)
    request = {"kind": "answer", "text": "It is 4.", "reference": {"answer": "4"}, "settings": {}}
    try:
        with pytest.raises(TypeError):
            pool.run(request | {"text": object()}, 30)
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(pool.run(request, 30)), daemon=True)
        waiter.start()
        waiter.join(60)
        assert got and got[0].status == "pass"
    finally:
        pool.close()
