"""The code sandbox: hostile or broken answers are contained and reported as a fail with the reason.

Each case runs an answer's code against its tests (moaa.verify.code_tests) in every isolation this
machine offers: namespaces (unshare) and rlimits (limits and the audit-hook guard), and bubblewrap
where installed. The limits are small so that a case takes seconds.
"""

from __future__ import annotations

import shutil
import socket
import sys
import uuid

import pytest

from moaa.config import SandboxConfig
from moaa.rows import Reference
from moaa.verify.code_tests import check_tests
from moaa.verify.isolation import SandboxUnavailable, namespace_problem, resolve_isolation
from moaa.verify.sandbox import run_contained
from tests.conftest import ROOT

ISOLATIONS = [
    pytest.param("namespaces", marks=pytest.mark.skipif(bool(namespace_problem()), reason="no user namespaces")),
    "rlimits",
    pytest.param("bwrap", marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")),
]
TESTS = Reference(tests=("assert add(1, 2) == 3", "assert add(2, 2) == 4"))


def limits(isolation: str, **extra) -> SandboxConfig:
    return SandboxConfig(**({"isolation": isolation, "cpu_s": 2, "wall_s": 6, "memory_mb": 256} | extra))


def answer(body: str) -> str:
    return f"Here it is:\n\n```python\n{body}\n```\n"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_right_answer_passes_and_a_wrong_one_fails_with_its_assert(isolation):
    good = check_tests(TESTS, answer("def add(a, b):\n    return a + b"), limits(isolation))
    assert (good.status, good.score, good.reason) == ("pass", 1.0, "2 of 2 tests passed")
    bad = check_tests(TESTS, answer("def add(a, b):\n    return a + b if a == 1 else 0"), limits(isolation))
    assert bad.status == "fail" and bad.score == 0.5
    assert bad.reason == "1 of 2 tests passed; test 2 `assert add(2, 2) == 4`: line 1: AssertionError"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_an_infinite_loop_is_stopped_by_the_cpu_limit(isolation):
    # a wall limit far above the CPU limit: on a loaded machine (the code runs at nice 19) 2 s of CPU
    # can take a minute to use up
    verdict = check_tests(TESTS, answer("def add(a, b):\n    while True:\n        pass"), limits(isolation, wall_s=120))
    assert verdict.status == "fail"
    assert "test 1 `assert add(1, 2) == 3`: stopped by the CPU-time limit" in verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_sleeping_answer_is_stopped_by_the_wall_time_limit(isolation):
    body = "import time\ndef add(a, b):\n    time.sleep(60)"
    verdict = check_tests(TESTS, answer(body), limits(isolation, wall_s=2))
    assert verdict.status == "fail" and "stopped by the wall-time limit (2 s)" in verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_memory_bomb_gets_a_memory_error(isolation):
    body = "def add(a, b):\n    hog = []\n    while True:\n        hog.append(bytearray(10**7))"
    verdict = check_tests(TESTS, answer(body), limits(isolation))
    assert verdict.status == "fail" and "MemoryError" in verdict.reason, verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_fork_bomb_is_stopped(isolation):
    body = "import os\ndef add(a, b):\n    while True:\n        os.fork()"
    verdict = check_tests(TESTS, answer(body), limits(isolation, processes=16))
    assert verdict.status == "fail"
    # namespaces count the run's processes and kill them all past the limit; without them the
    # guard refuses the fork (and RLIMIT_NPROC bounds a non-root user)
    expected = "sandbox: os.fork is not allowed" if isolation == "rlimits" else "stopped by the process limit"
    assert expected in verdict.reason, verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_network_call_fails_and_reaches_nothing(isolation):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    call = f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    body = f"import socket\ndef add(a, b):\n    {call}\n    return a + b"
    with server:
        verdict = check_tests(TESTS, answer(body), limits(isolation))
        with pytest.raises(TimeoutError):
            server.accept()  # the listener outside the sandbox was never reached
    assert verdict.status == "fail"
    # namespaces: the loopback is down; bubblewrap: its own loopback, where nothing listens
    expected = {"rlimits": "socket.getaddrinfo is not allowed", "namespaces": "Network is unreachable",
                "bwrap": "Connection refused"}[isolation]  # fmt: skip
    assert expected in verdict.reason, verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_write_outside_the_folder_fails_and_leaves_nothing(isolation):
    target = ROOT / f"escaped-{uuid.uuid4().hex}.txt"  # the project folder: writable from outside
    body = f"def add(a, b):\n    open({str(target)!r}, 'w').write('out')\n    return a + b"
    try:
        verdict = check_tests(TESTS, answer(body), limits(isolation))
        assert verdict.status == "fail" and not target.exists()
    finally:
        target.unlink(missing_ok=True)
    expected = "outside the run's folder is not allowed" if isolation == "rlimits" else "Read-only file system"
    assert expected in verdict.reason, verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_100_mb_print_is_cut_at_the_output_limit(isolation):
    body = "def add(a, b):\n    print('x' * 100_000_000)\n    return a + b"
    verdict = check_tests(TESTS, answer(body), limits(isolation, output_kb=64))
    assert verdict.status == "fail" and "stopped by the output limit (64 KiB)" in verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_big_file_is_cut_at_the_file_size_limit(isolation):
    body = "def add(a, b):\n    open('big', 'wb').write(b'x' * 50_000_000)\n    return a + b"
    verdict = check_tests(TESTS, answer(body), limits(isolation, file_mb=1))
    assert verdict.status == "fail" and "File too large" in verdict.reason


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_code_sees_no_environment_and_a_fresh_folder(isolation, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-seen-inside")
    done = run_contained(
        [sys.executable, "-I", "-c", "import os, json; print(json.dumps([dict(os.environ), os.listdir('.')]))"],
        {"given.txt": "x"}, limits(isolation),
    )  # fmt: skip
    assert "sk-never-seen-inside" not in done.stdout
    assert '"given.txt"' in done.stdout and done.returncode == 0


def test_javascript_tests_run_in_node_and_await_timers():
    if shutil.which("node") is None or namespace_problem():
        pytest.skip("needs node and namespaces")
    tests = (
        "let calls = []; const d = debounce((x) => calls.push(x), 30); d(1); d(2); d(3);"
        " assert.deepStrictEqual(calls, []); await new Promise(r => setTimeout(r, 90));"
        " assert.deepStrictEqual(calls, [3]);",
    )
    reference = Reference(tests=tests, language="javascript")
    good = (
        "```javascript\nexport function debounce(fn, ms) {\n  let t;\n"
        "  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };\n}\n```"
    )
    assert check_tests(reference, good, limits("namespaces")).status == "pass"
    eager = "```js\nfunction debounce(fn, ms) { return fn; }\n```"
    verdict = check_tests(reference, eager, limits("namespaces"))
    assert verdict.status == "fail" and "Expected values to be strictly deep-equal" in verdict.reason


def test_javascript_is_not_run_without_namespaces():
    reference = Reference(tests=("assert.ok(true)",), language="javascript")
    verdict = check_tests(reference, "```js\n1\n```", limits("rlimits"))
    assert verdict.status == "unverifiable" and "runs only with namespaces or bubblewrap" in verdict.reason


def test_an_isolation_that_does_not_work_here_is_named():
    if shutil.which("bwrap"):
        pytest.skip("bubblewrap is installed here")
    with pytest.raises(SandboxUnavailable, match="bubblewrap \\(bwrap\\) is not installed"):
        resolve_isolation("bwrap")


@pytest.mark.skipif(bool(namespace_problem()) and shutil.which("bwrap") is None, reason="no isolation")
def test_auto_picks_the_strongest_isolation_available():
    assert resolve_isolation("auto") == ("bwrap" if shutil.which("bwrap") else "namespaces")
