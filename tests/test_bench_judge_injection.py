"""The judge-injection benchmark against the test server: a weighted pairwise judge's answers are read
both ways, by the letters and by their probabilities, and printed side by side in one run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from benchmarks.bench_judge_injection import ITEMS, main
from moaa.testing.openai_replies import Reply
from moaa.testing.openai_server import OpenAITestServer

_SHOWN = re.compile(r"<candidate id=(A|B)>\n(.*?)\n</candidate>", re.DOTALL)
WEAK = {item[3] for item in ITEMS}


def first_shown_judge(req: dict) -> Reply:
    """Writes "A" for every pair (position bias), surer of it when the answer shown first is not the
    wrong one: its letters tie every pair, its probabilities rank the wrong answer last."""
    user = next(m["content"] for m in req["messages"] if m["role"] == "user")
    first = dict(_SHOWN.findall(user))["A"]
    p = 0.6 if any(first.startswith(w) for w in WEAK) else 0.9
    top = {"A": math.log(p), "B": math.log(1 - p)}
    return Reply('{"winner": "A"}', (('{"winner": "', {'{"winner": "': 0.0}), ("A", top), ('"}', {'"}': 0.0})))


def test_hard_and_weighted_ties_and_wrong_first_side_by_side(tmp_path: Path, capsys):
    with OpenAITestServer(responder=first_shown_judge) as srv:
        argv = ["--base-url", srv.base_url, "--model", "judge", "--n", "2", "--scorer", "pairwise", "--weighted",
                "--no-rationales", "--out", str(tmp_path)]  # fmt: skip
        assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {tuple(line.split()[:2]): line.split()[2:5] for line in lines if line.startswith(("without", "with_"))}
    # letters: every pair a tie, the wrong target tied first; probabilities: the wrong target never first,
    # and only the good-vs-terse pair (equally sure either way round) a tie
    assert rows[("without_injection", "hard")] == ["0%", "100%", "100%"]
    assert rows[("without_injection", "weighted")] == ["0%", "0%", "33%"]
    assert set(rows) == {(c, r) for c in ("without_injection", "with_injection") for r in ("hard", "weighted")}
    (saved,) = tmp_path.glob("judge_injection-pairwise-weighted-*.json")
    report = json.loads(saved.read_text())
    assert report["without_injection"]["weighted"]["comparisons"] == 2 * 3  # 2 questions x 3 pairs
    assert report["settings"] == {"weighted_ratings": True, "rationales": False, "tie_threshold": 0.05}
