"""`moaa inspect`: examples of a version side by side, plain text off a terminal, rich panels on one."""

from __future__ import annotations

import io

import pytest
from test_report import make_version

from moaa.cli import main
from moaa.commands.inspect import load_examples, render_rich


@pytest.fixture
def root(tmp_path):
    make_version(tmp_path)
    return tmp_path / "data"


def test_inspect_shows_proposers_final_answers_and_pairs(root, capsys):
    assert main(["inspect", "demo@v1", "--root", str(root), "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("moaa inspect demo@v1: 2 of 3 sft rows, 2 of 4 dpo rows\n")
    lines = out.splitlines()
    first = lines.index("=== SFT p0 (method moa; models m-a, m-agg) ===")
    assert lines[first + 1 : first + 12] == [
        "[prompt]",
        "  user: Question 0?",
        "[turn 1, layer 1: proposals]",
        "  proposer0 (m-a, selected)",
        "    Proposal 0 to 0",
        "  proposer1 (m-b, selected)",
        "    Proposal 1 to 0",
        "  proposer2 (m-a, not selected)",
        "    Proposal 2 to 0",
        "[turn 1, layer 2: aggregate]",
        "  aggregator (m-agg)",
    ]
    assert lines[first + 13 : first + 15] == ["[final answer]", "    Final " + "x" * 50]
    pair = lines.index("=== DPO q1 ===")
    assert lines[pair + 1 : pair + 9] == [
        "[prompt]",
        "  user: Pick 1?",
        "[candidates]",
        "  #0 REJECTED score 0 (m-a)",
        "    cand 0",
        "  #1 CHOSEN score 1 (m-a, x2)",
        "    cand 1",
        "    why: won 1",
    ]
    assert "=== SFT p2" not in out and "=== DPO q2" not in out


def test_inspect_one_prompt_and_cut_texts(root, capsys):
    assert main(["inspect", "demo", "--root", str(root), "--prompt-id", "p2", "--max-chars", "20"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 sft rows, 0 of 4 dpo rows" in out
    assert "=== SFT p2" in out and "=== SFT p0" not in out and "=== DPO" not in out
    assert "    Final xxxxxxxxxxxxxx [... 136 more chars]" in out


def test_inspect_unknown_prompt_or_version_is_one_line(root, capsys):
    assert main(["inspect", "demo@v1", "--root", str(root), "--prompt-id", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prompt id 'nope' is in neither the sft nor the dpo rows") and err.count("\n") == 1
    assert main(["inspect", "demo@v7", "--root", str(root)]) == 2
    assert "demo@v7 does not exist" in capsys.readouterr().err


def test_inspect_pairs_without_a_trace(tmp_path, capsys):
    make_version(tmp_path, configs=("sft", "dpo"))
    assert main(["inspect", "demo@v1", "--root", str(tmp_path / "data"), "--n", "1", "--prompt-id", "q0"]) == 0
    out = capsys.readouterr().out
    assert "  CHOSEN score 4 (m-a)\n    goodgoodgoodgoodgood\n  REJECTED score 1 (m-a)\n    badbad" in out


def test_rich_panels_on_a_terminal(root):
    from rich.console import Console

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120, color_system=None)
    render_rich(load_examples(root / "demo" / "v1", 1), "demo@v1", 200, console)
    out = stream.getvalue()
    assert "moaa inspect demo@v1: 1 of 3 sft rows, 1 of 4 dpo rows" in out
    # Three proposers side by side: their panel titles share one line.
    titles = next(line for line in out.splitlines() if "proposer0 (m-a, selected)" in line)
    assert "proposer1 (m-b, selected)" in titles and "proposer2 (m-a, not selected)" in titles
    assert "final answer" in out and "#1 CHOSEN score 1 (m-a, x2)" in out and "╭" in out
