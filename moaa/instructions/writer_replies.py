"""A writer's reply read into its tasks: JSON {"tasks": [...]} (moaa.prompts.instructions.tasks_schema) or
`instruction:` ... `|EoS|` blocks, and, for a with-tests task, its function read strictly.

A with-tests task (moaa.prompts.instructions.WRITE_WITH_TESTS) names one function on a `signature:` line
(`def name(parameters) -> type`, one line of valid Python) and holds 3 to 6 tests, one `assert` a line,
each calling that function, in a ```python block under `tests:` (the fence may be left out in a JSON
reply). Anything else is no function: `read_function` says why, and the stage drops the task as
`unparsable_tests` with that reason.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from moaa.prompts.instructions import EOS

MIN_TESTS, MAX_TESTS = 3, 6
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)```", re.S)


@dataclass(frozen=True)
class FunctionSpec:
    """The function a with-tests task asks for, and the tests (its reference) its answers must pass."""

    signature: str  # `def name(parameters) -> type`, as the answerers read it
    name: str
    tests: tuple[str, ...]  # one `assert` line each (moaa.rows.Reference.tests, MBPP's test_list)


def reply_fields(reply: str, names: tuple[str, ...]) -> list[dict[str, str]]:
    """The fields `names` of each task of a reply that has an instruction (a missing field is ""): its
    JSON {"tasks": [...]}, else its blocks of `name:` fields ended by `|EoS|` (a field runs to the next)."""
    try:
        data = json.loads(reply)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        found = [t for t in data["tasks"] if isinstance(t, dict) and isinstance(t.get("instruction"), str)]
        return [{key: str(t.get(key) or "").strip() for key in names} for t in found if t["instruction"].strip()]
    marker = re.compile(rf"^\s*({'|'.join(names)})\s*:\s?", re.I | re.M)
    tasks = []
    for block in reply.split(EOS):
        fields: dict[str, str] = {}
        marks = list(marker.finditer(block))
        if not marks:
            continue
        for mark, after in zip(marks, [*marks[1:], None], strict=True):
            end = after.start() if after else len(block)
            fields.setdefault(mark.group(1).lower(), block[mark.end() : end].strip())
        if fields.get("instruction"):
            tasks.append({key: fields.get(key, "") for key in names})
    return tasks


def parse_tasks(reply: str) -> list[tuple[str, str, str, str]]:
    """(instruction, input, output, answer) of each task of a writer's reply that has an instruction."""
    names = ("instruction", "input", "output", "answer")
    return [tuple(fields[key] for key in names) for fields in reply_fields(reply, names)]  # type: ignore[misc]


def parse_function_tasks(reply: str) -> list[tuple[str, str, FunctionSpec | str]]:
    """(instruction, output, its function or why it has none) of each with-tests task of a reply; the
    output (the writer's solution) keeps its fence, as an answer to the task would."""
    names = ("instruction", "signature", "output", "tests")
    return [
        (fields["instruction"], fields["output"], read_function(fields["signature"], fields["tests"]))
        for fields in reply_fields(reply, names)
    ]


def read_function(signature: str, tests: str) -> FunctionSpec | str:
    """The function of a with-tests task, or why its signature or tests are not in the asked format."""
    line = signature.strip().strip("`").strip().removesuffix(":").rstrip()
    if not line:
        return "no `signature:` line"
    try:
        tree = ast.parse(line + ":\n    pass")
    except SyntaxError:
        tree = None
    if "\n" in line or tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return f"the signature {line[:80]!r} is not one line `def name(parameters) -> type`"
    name = tree.body[0].name
    fenced = _FENCE.search(tests)
    lines = [t.strip() for t in (fenced.group(1) if fenced else tests).splitlines() if t.strip()]
    if not MIN_TESTS <= len(lines) <= MAX_TESTS:
        return f"{len(lines)} test lines under `tests:` ({MIN_TESTS} to {MAX_TESTS} `assert` lines needed)"
    calls = re.compile(rf"\b{re.escape(name)}\s*\(")
    for number, test in enumerate(lines, 1):
        if not test.startswith("assert "):
            return f"test line {number} is not an `assert`: {test[:80]!r}"
        if not calls.search(test):
            return f"test {number} does not call {name}(): {test[:80]!r}"
    return FunctionSpec(line, name, tuple(lines))
