"""Runs an answer's Python code, then each of its tests, inside the sandbox; standard library only.

`python -I python_harness.py` in the run's folder, which holds `solution.py` and `tests.json`
({"tests": [code, ...]}). It writes `results.jsonl` as it goes, one line per step, so
a run killed half-way (a time limit) still says which test it was in:
  {"step": "load", "ok": false, "error": "..."}   the solution itself raised
  {"step": 3, "ok": true}                         test 3 passed
The solution is run as module `solution` (its `if __name__ == "__main__":` demo does not run); each
test is run in its namespace. With MOAA_SANDBOX_GUARD=1 in its environment (the sandbox sets it
where there are no namespaces), an audit hook refuses
network use, new processes, native code and file writes outside the folder: a tripwire for code
that means no harm, not a boundary (PEP 578).
"""

import json
import os
import sys
import traceback

FOLDER = os.getcwd()
RESULTS = os.path.join(FOLDER, "results.jsonl")
ERROR_CHARS = 400

_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "pty.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill", "webbrowser.")  # fmt: skip
_WRITES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate",
           "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move")  # fmt: skip


def _inside(path):
    if isinstance(path, int):
        return True  # an open descriptor
    real = os.path.realpath(os.fsdecode(path))
    return real == FOLDER or real.startswith(FOLDER + os.sep) or real == os.devnull


def _guard(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and len(args) > 1 and args[0] is not None:
        mode, flags = args[1] or "", args[2] if len(args) > 2 else 0
        writing = any(c in str(mode) for c in "wax+") or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if writing and not _inside(args[0]):
            raise PermissionError(f"sandbox: writing {args[0]!r} outside the run's folder is not allowed")
    elif event in _WRITES and args and not all(_inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
        raise PermissionError(f"sandbox: {event} outside the run's folder is not allowed")


def _record(results, entry):
    results.write(json.dumps(entry) + "\n")
    results.flush()


def _error(exc):
    """The failing line and the exception, e.g. "assert add(2, 2) == 5: AssertionError"."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in ("<solution>", "<test>")]
    where = f"line {frames[-1].lineno}: " if frames else ""
    text = f"{where}{type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    return text[:ERROR_CHARS]


def main():
    with open("tests.json", encoding="utf-8") as fh:
        spec = json.load(fh)
    with open("solution.py", encoding="utf-8") as fh:
        source = fh.read()
    results = open(RESULTS, "a", encoding="utf-8")
    if os.environ.pop("MOAA_SANDBOX_GUARD", "") == "1":
        sys.addaudithook(_guard)
    sys.stdin = open(os.devnull)  # input() reads EOF, never waits
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(source, "<solution>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from the code too
        _record(results, {"step": "load", "ok": False, "error": _error(exc)})
        return
    _record(results, {"step": "load", "ok": True})
    for index, test in enumerate(spec["tests"]):
        try:
            exec(compile(test, "<test>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001
            _record(results, {"step": index, "ok": False, "error": _error(exc)})
        else:
            _record(results, {"step": index, "ok": True})


main()
