"""Seed tasks: the human-written examples the writers imitate (configs/prompts/seed-tasks.jsonl).

One JSON object a line: `id` (unique), `category` (a word: extraction, maths, advice...),
`instruction`, `input` ("" for a task that needs none), `output` (a correct answer), and optionally
`answer`, a final answer the verifiers can check, or, for a Python function, `signature`
(`def name(parameters) -> type`) with `tests` (a list of `assert` lines its `output` passes): shown
only to the writers' with-tests calls. A mistake names the file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moaa.errors import InputError

_REQUIRED = ("id", "category", "instruction", "input", "output")


@dataclass(frozen=True)
class SeedTask:
    id: str
    category: str
    instruction: str
    input: str
    output: str
    answer: str | None = None
    signature: str | None = None  # with tests: the function's `def` line
    tests: tuple[str, ...] = ()  # `assert` lines the output passes

    @property
    def with_input(self) -> bool:
        return bool(self.input.strip())


def load_seeds(path: Path) -> list[SeedTask]:
    """Every seed task of `path`, in file order; an InputError naming the line for a bad one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such seed file; set instructions.seeds to a JSONL file of seed tasks") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as UTF-8 text ({exc}); fix instructions.seeds") from None
    seeds: list[SeedTask] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        seeds.append(_seed(line, f"{path}:{number}", seen))
    if not seeds:
        raise InputError(f"{path}: holds no seed task; add some (one JSON object a line)")
    return seeds


def _seed(line: str, where: str, seen: set[str]) -> SeedTask:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where}: not JSON ({exc.msg}); write one JSON object a line") from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: not a JSON object; write {{id, category, instruction, input, output}}")
    for key in _REQUIRED:
        if not isinstance(row.get(key), str) or (key != "input" and not row[key].strip()):
            raise InputError(f"{where}: field '{key}' must be a non-empty string ('input' may be \"\")")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str | int | float):
        raise InputError(f"{where}: field 'answer' must be a string or a number")
    signature, tests = row.get("signature"), row.get("tests")
    asserts = isinstance(tests, list) and all(isinstance(t, str) and t.startswith("assert ") for t in tests)
    if tests is not None and not (tests and asserts):
        raise InputError(f"{where}: field 'tests' must be a non-empty list of `assert ...` lines")
    if (tests is None) != (signature is None) or (signature is not None and not str(signature).startswith("def ")):
        raise InputError(f"{where}: fields 'signature' (a `def name(...)` line) and 'tests' go together")
    if row["id"] in seen:
        raise InputError(f"{where}: duplicate id '{row['id']}'; give every seed task its own id")
    seen.add(row["id"])
    return SeedTask(
        row["id"], row["category"].strip(), row["instruction"], row["input"], row["output"],
        None if answer is None else str(answer), signature, tuple(tests or ()),
    )  # fmt: skip
