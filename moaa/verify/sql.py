"""The `sql` check: the answer's query run on SQLite against the reference's fixture, results compared.

The fixture (`schema`: a script that creates and fills the tables) is loaded into an in-memory
database per query; the answer's query (its last SQL block, or a bare SELECT/WITH answer) runs
read-only (`PRAGMA query_only`, ATTACH refused, one statement) under a time limit. Its rows are
compared with the reference's: the rows of the reference query `sql`, or `rows` as given. Values
compare as numbers where both are numbers (to 6 decimal places), else as text. Order counts when
`ordered` is true (unset: when the reference query says ORDER BY). The columns must be as many as
the reference's (execution match, as Spider scores it), in any order, their names free: an answer
that adds a column the question did not ask for (`created_at` beside `GROUP BY customer_id`, an
error in most databases that SQLite lets through) does not match.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from typing import Any

from moaa.rows import Reference
from moaa.verify.extract import sql_of
from moaa.verify.verdict import Verdict, failed, passed, unverifiable

MAX_ROWS = 10_000
MAX_COLUMN_ORDERS = 720  # column orders tried (6 columns: every one)


class QueryError(Exception):
    pass


def run_query(schema: str, query: str, timeout_s: float) -> list[tuple[Any, ...]]:
    """The query's rows on a fresh in-memory database made by `schema`; QueryError naming SQLite's error."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(schema)
        db.execute("PRAGMA query_only = ON")
        db.set_authorizer(lambda action, *args: sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else 0)
        deadline = time.monotonic() + timeout_s
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            rows = db.execute(query).fetchmany(MAX_ROWS + 1)
        except sqlite3.Error as exc:
            if "interrupted" in str(exc):
                raise QueryError(f"the query ran longer than {timeout_s:g} s") from None
            raise QueryError(str(exc)) from None
        if len(rows) > MAX_ROWS:
            raise QueryError(f"the query returned more than {MAX_ROWS} rows")
        return [tuple(row) for row in rows]
    finally:
        db.close()


def check_sql(reference: Reference, text: str, timeout_s: float) -> Verdict:
    assert reference.schema is not None  # Reference.from_dict requires it beside sql or rows
    try:
        expected = list(reference.rows) if reference.rows is not None else None
        if expected is None:
            assert reference.sql is not None
            expected = run_query(reference.schema, reference.sql, timeout_s)
    except (QueryError, sqlite3.Error) as exc:
        return unverifiable(f"the reference query or fixture fails on SQLite: {exc}", "sql")
    query = sql_of(text)
    if query is None:
        return failed("no SQL query in the answer", "sql")
    try:
        got = run_query(reference.schema, query, timeout_s)
    except QueryError as exc:
        return failed(f"the query fails on SQLite: {exc}", "sql", query=query)
    except sqlite3.Error as exc:
        return unverifiable(f"the fixture fails on SQLite: {exc}", "sql")
    ordered = reference.ordered
    if ordered is None:
        ordered = bool(reference.sql and re.search(r"(?i)\border\s+by\b", reference.sql))
    problem = compare(expected, got, ordered)
    if problem:
        hint = "the rows it returns are not the ones asked for" if problem.startswith("the rows differ") else problem
        return failed(problem, "sql", feedback=f"your query runs, but {hint}", query=query, expected=_shown(expected))
    return passed(f"{len(got)} rows match the reference{' in order' if ordered else ''}", "sql", query=query)


def compare(expected: list[tuple], got: list[tuple], ordered: bool) -> str:
    """ "" when `got` holds the expected rows (in order if `ordered`), else what differs."""
    if len(got) != len(expected):
        return f"returned {len(got)} rows, expected {len(expected)}"
    if not expected:
        return ""
    want = [tuple(_value(v) for v in row) for row in expected]
    width, have_width = len(want[0]), len(got[0])
    if have_width != width:
        return f"returned {have_width} columns, expected {width}"
    choices = itertools.islice(itertools.permutations(range(width)), MAX_COLUMN_ORDERS)
    unordered_match = False
    for columns in choices:
        have = [tuple(_value(row[c]) for c in columns) for row in got]
        if have == want:
            return ""
        unordered_match = unordered_match or sorted(have, key=repr) == sorted(want, key=repr)
    if unordered_match and not ordered:
        return ""
    if unordered_match:
        return "the rows are right but not in the expected order"
    return f"the rows differ from the reference ({_first_difference(want, got, ordered)})"


def _first_difference(want: list[tuple], got: list[tuple], ordered: bool) -> str:
    """The first row that is not as expected, its columns as returned (e.g. "row 2 is [2, 80.0], expected [2, 230]")."""
    have = [tuple(_value(v) for v in row) for row in got]
    if ordered:
        index = next(i for i, (a, b) in enumerate(zip(have, want, strict=True)) if a != b)
        return f"row {index + 1} is {_shown([got[index]])[1:-1]}, expected {_shown([want[index]])[1:-1]}"
    extra = next((row for row, value in zip(got, have, strict=True) if value not in want), got[0])
    return f"it returned {_shown([extra])[1:-1]}, which the reference does not"


def _value(value: Any) -> Any:
    """A value as compared: numbers rounded to 6 places (1 and 1.0 alike), text as is."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        number = round(float(value), 6)
        return int(number) if number.is_integer() else number
    if isinstance(value, str):
        try:
            return _value(float(value)) if re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", value) else value
        except ValueError:
            return value
    return value


def _shown(rows: list) -> str:
    text = repr([list(r) for r in rows[:3]]) + (f" (+{len(rows) - 3} rows)" if len(rows) > 3 else "")
    return text if len(text) <= 160 else text[:157] + "..."
