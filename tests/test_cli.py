"""The command line as a shell uses it: output piped into a reader that stops early ends quietly.

Run: .venv/bin/python -m pytest tests/test_cli.py -q
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.version_helpers import write_demo, write_parts

REPO = Path(__file__).resolve().parents[1]


def _closed_reader(args: list[str]) -> subprocess.CompletedProcess:
    """Run `moaa ARGS` with its stdout a pipe whose reader is gone before the first write (`| head -0`)."""
    code = "import sys; from moaa.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader leaves at once: every write meets a broken pipe
    err = proc.stderr.read().decode()
    return subprocess.CompletedProcess(args, proc.wait(timeout=120), "", err)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["datasets", "list"], ["datasets", "show", "demo@v1", "--rows", "50"], ["inspect", "demo@v1"]],
)
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, args):
    root = tmp_path / "data"
    write_demo(root, write_parts(tmp_path / "parts"))
    done = _closed_reader([*args, "--root", str(root)] if args != ["--help"] else args)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    # 141 (128 + SIGPIPE) as a shell reports it; argparse's help swallows the error itself
    assert done.returncode == (0 if args == ["--help"] else 141), done.stderr


def test_output_piped_into_head_ends_quietly(tmp_path):
    root = tmp_path / "data"
    write_demo(root, write_parts(tmp_path / "parts"))
    moaa = f"{sys.executable} -c 'import sys; from moaa.cli import main; sys.exit(main(sys.argv[1:]))'"
    shell = f"set -o pipefail; {moaa} datasets show demo@v1 --rows 50 --root {root} | head -n 2"
    done = subprocess.run(["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
