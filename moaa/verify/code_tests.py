"""The `tests` check: the answer's fenced code, then each test, run in the sandbox.

Python: a list of strings is a list of tests (MBPP's `test_list`); one string is split into its
top-level statements, each `assert` a test and the others (imports, helpers) run in order between
them; a string without a top-level assert (HumanEval's `def check(candidate): ...` followed by a
call) is one test. JavaScript (node, where installed): each string is the body of an async
function given Node's `assert`, so a test may `await` a timer. The verdict's score is the fraction
of tests passed, its reason the first failing test and its error ("test 2 `assert f(3) == 9`:
AssertionError"), or the limit that stopped the run.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path

from moaa.config import SandboxConfig
from moaa.rows import Reference
from moaa.verify.extract import code_of
from moaa.verify.isolation import SandboxUnavailable
from moaa.verify.sandbox import run_contained
from moaa.verify.verdict import Verdict, failed, passed, unverifiable

HARNESS = Path(__file__).with_name("harness") / "python_harness.py"
RESULTS = "results.jsonl"
TEST_CHARS = 80  # of a test's code quoted in a reason


def split_tests(tests: tuple[str, ...], language: str) -> list[str]:
    """The tests to count, each runnable code (Python setup statements are folded into the next test)."""
    if language != "python" or len(tests) != 1:
        return list(tests)
    try:
        tree = ast.parse(tests[0])
    except SyntaxError:
        return list(tests)  # run as given: the failure names the syntax error
    if not any(isinstance(node, ast.Assert) for node in tree.body):
        return list(tests)
    out, pending = [], []
    for node in tree.body:
        pending.append(ast.get_source_segment(tests[0], node) or ast.unparse(node))
        if isinstance(node, ast.Assert):
            out.append("\n".join(pending))
            pending = []
    if pending and out:
        out[-1] += "\n" + "\n".join(pending)
    return out


def check_tests(reference: Reference, text: str, cfg: SandboxConfig) -> Verdict:
    """Run the answer's code against `reference.tests` (in `reference.language`)."""
    language = reference.language
    code = code_of(text, language)
    if code is None:
        return failed(f"no {language} code block in the answer", "tests", tests=0)
    tests = split_tests(reference.tests, language)
    try:
        if language == "python":
            files = {"solution.py": code, "tests.json": json.dumps({"tests": tests})}
            command = [sys.executable, "-I", str(HARNESS)]
            done = run_contained(command, files, cfg, language="python", collect=(RESULTS,))
        else:
            node = shutil.which("node") or shutil.which("nodejs")
            if node is None:
                return unverifiable("JavaScript tests need Node.js (node), which is not installed", "tests")
            files = {"main.js": javascript_program(code, tests)}
            command = [node, f"--max-old-space-size={cfg.memory_mb}", "main.js"]
            done = run_contained(command, files, cfg, language="javascript", collect=(RESULTS,))
    except SandboxUnavailable as exc:
        return unverifiable(str(exc), "tests")
    if done.setup_failed:
        return unverifiable(done.setup_failed, "tests")
    return _verdict(tests, _records(done.files.get(RESULTS, "")), done.stopped_by(), done.stderr)


def _records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _verdict(tests: list[str], records: list[dict], stopped: str, stderr: str) -> Verdict:
    load = next((r for r in records if r["step"] == "load"), None)
    outcomes = {r["step"]: r for r in records if isinstance(r["step"], int)}
    passed_count = sum(1 for r in outcomes.values() if r.get("ok"))
    score = passed_count / len(tests) if tests else 0.0
    details = {"tests": len(tests), "passed": passed_count, "outcomes": [outcomes.get(i) for i in range(len(tests))]}
    if load is None or not load.get("ok"):
        why = (load or {}).get("error") or stopped or _error_line(stderr) or "it exited before loading"
        return failed(f"the code did not run: {why}", "tests", 0.0, **details)
    first_bad = next((i for i in range(len(tests)) if not outcomes.get(i, {}).get("ok")), None)
    if first_bad is None:
        return passed(f"{len(tests)} of {len(tests)} tests passed", "tests", 1.0, **details)
    record = outcomes.get(first_bad)
    error = record.get("error", "") if record else (f"stopped by {stopped}" if stopped else _error_line(stderr))
    quoted = " ".join(tests[first_bad].split())
    quoted = quoted if len(quoted) <= TEST_CHARS else quoted[: TEST_CHARS - 3] + "..."
    error = " ".join(error.split()) or "failed"
    reason = f"{passed_count} of {len(tests)} tests passed; test {first_bad + 1} `{quoted}`: {error}"
    return failed(reason, "tests", score, **details)


def _error_line(text: str) -> str:
    """The error a crashed run printed: its last `SomethingError: ...` line, else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1][:200]


_EXPORT_RE = re.compile(r"^(\s*)export\s+(default\s+)?(?=(async\s+)?function|const|let|var|class)", re.MULTILINE)


def javascript_program(code: str, tests: list[str]) -> str:
    """A CommonJS script: the answer's code (ES `export` keywords dropped), then each test in an async
    function given `assert`, its outcome appended to results.jsonl."""
    lines = [
        "const __moaaFs = require('fs');",
        "const __moaaOut = (e) => __moaaFs.appendFileSync('results.jsonl', JSON.stringify(e) + '\\n');",
        _EXPORT_RE.sub(r"\1", code),
        ";(async () => {",
        "  __moaaOut({step: 'load', ok: true});",
    ]
    for index, test in enumerate(tests):
        lines += [
            "  try {",
            f"    await (async (assert) => {{\n{test}\n    }})(require('assert'));",
            f"    __moaaOut({{step: {index}, ok: true}});",
            "  } catch (e) {",
            f"    __moaaOut({{step: {index}, ok: false, error: String((e && e.message) || e).slice(0, 400)}});",
            "  }",
        ]
    lines += ["})();", ""]
    return "\n".join(lines)
