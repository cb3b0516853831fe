"""The rationale benchmark against the test server: policy samples checked by moaa.verify, the same
candidates judged with and without a rationale, and the (pass, fail) pairs each setting orders right."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from benchmarks.bench_rationale import count_pairs, main
from moaa.testing.openai_replies import Reply
from moaa.testing.openai_server import OpenAITestServer

_SHOWN = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
# math-001 (the shirt at 25% off: 18) gets two passing and two failing answers; coding-001 one failing
ANSWERS = ["The sale price is $18.", "The sale price is $20.", "18", "It is $21."]
# without a rationale: digits 4, 4, 4, 2 (a tie between $18 and $20), weights that separate them
WEIGHTS = {"$18": {"4": 0.9, "3": 0.1}, "$20": {"4": 0.6, "3": 0.4}, "18": {"4": 0.9, "3": 0.1}, "$21": {"2": 1.0}}


def rated(text: str, weights: dict[str, float]) -> Reply:
    digit = max(weights, key=lambda d: weights[d])
    head = '{"helpfulness": {"rating": '
    top = {d: math.log(p) for d, p in sorted(weights.items(), key=lambda kv: -kv[1])}
    return Reply(f"{head}{digit}}}}}", ((head, {head: 0.0}), (digit, top), ("}}", {"}}": 0.0})))


def responder(req: dict):
    user = next(m["content"] for m in req["messages"] if m["role"] == "user")
    shown = dict(_SHOWN.findall(user))
    if not shown:
        return list(ANSWERS) if "shirt costs $24" in user else "no idea"
    text = shown["1"]
    key = next(k for k in WEIGHTS if k in text) if "$" in text else "18"
    if "rationale" in json.dumps(req.get("response_format", {})):  # with a rationale: every failing one higher
        rating = 2 if key in ("$18", "18") else 3
        return json.dumps({"helpfulness": {"rationale": "fine", "rating": rating}})
    return rated(text, WEIGHTS[key])


def test_pairs_are_counted_by_how_the_scores_order_each_passing_and_failing_answer():
    passed = [True, False, None, True, False]
    got = count_pairs(passed, [4.0, 4.0, 5.0, 3.0, None])
    # (0,1) tie, (0,4) unscored, (3,1) wrong, (3,4) unscored; the unchecked answer pairs with nothing
    assert (got.right, got.tie, got.wrong, got.unscored) == (0, 1, 1, 2)
    assert count_pairs([True, False, False], [3.0, 2.5, 3.5]).right == 1


def test_each_setting_is_scored_on_the_same_checked_candidates(tmp_path: Path, capsys):
    with OpenAITestServer(responder=responder) as srv:
        assert main(["--base-url", srv.base_url, "--model", "m", "--n", "2", "--samples", "4",
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "2 checked prompts x 4 samples: 5 distinct answers (2 pass, 3 fail), 1 prompts with both, 4" in out
    (saved,) = tmp_path.glob("rationale-*.json")  # the partial file is gone once the run is done
    summary = json.loads(saved.read_text())["summary"]
    off, on = summary["rationales false"], summary["rationales true, max_tokens 48"]
    assert [off["digits"][k] for k in ("right", "tie", "wrong", "unscored")] == [2, 2, 0, 0]
    assert [off["weighted"][k] for k in ("right", "tie", "wrong", "unscored")] == [4, 0, 0, 0]
    assert off["digits"]["accuracy"] == 0.5 and off["weighted"]["accuracy"] == 1.0
    assert [on["digits"][k] for k in ("right", "tie", "wrong")] == [0, 0, 4]
    # the test server's plain replies carry certain tokens: the weighted reading finds each digit after the
    # rationale and keeps it
    assert on["weighted"]["wrong"] == 4 and on["weighed"] == 4
    assert (off["verdicts"], off["weighed"], off["unparsed"]) == (4, 4, 0)
    assert off["tokens_per_verdict"] > 0 and on["seconds_per_verdict"] > 0
    roomy = summary["rationales true, max_tokens 256"]  # the same verdicts here: the server ignores max_tokens
    assert [roomy["digits"][k] for k in ("right", "tie", "wrong")] == [0, 0, 4]


def test_an_earlier_runs_candidates_are_judged_again_without_sampling(tmp_path: Path, capsys):
    with OpenAITestServer(responder=responder) as srv:
        assert main(["--base-url", srv.base_url, "--model", "m", "--n", "2", "--samples", "4",
                     "--out", str(tmp_path / "first")]) == 0  # fmt: skip
    (first,) = (tmp_path / "first").glob("rationale-*.json")

    def judge_only(req: dict):
        assert "<candidate id=" in req["messages"][-1]["content"], "the policy was asked again"
        return responder(req)

    with OpenAITestServer(responder=judge_only) as srv:
        assert main(["--base-url", srv.base_url, "--model", "m", "--n", "2", "--candidates", str(first),
                     "--out", str(tmp_path / "again")]) == 0  # fmt: skip
    (again,) = (tmp_path / "again").glob("rationale-*.json")
    old, new = (json.loads(p.read_text()) for p in (first, again))
    assert new["results"][0]["candidates"] == old["results"][0]["candidates"]
    assert new["summary"]["rationales false"]["weighted"]["right"] == 4


def test_make_bench_runs_it_by_name_and_tables_its_figures(tmp_path: Path, capsys):
    from benchmarks.__main__ import main as bench_main

    with OpenAITestServer(responder=responder) as srv:
        assert bench_main(["--only", "rationale", "--quick", "--prompts", "2", "--base-url", srv.base_url,
                           "--model", "m", "--out", str(tmp_path)]) == 0  # fmt: skip
    (saved,) = tmp_path.glob("bench-*.json")
    figures = {f["name"]: f for f in json.loads(saved.read_text())["figures"]}
    assert figures["rationales false: pass ranked higher, by weighted"]["value"] == 1.0
    assert figures["rationales false: pass ranked higher, by digits"]["note"].startswith("2/4 pairs, ties 2")
    assert figures["rationales true, max_tokens 256: pass ranked higher, by digits"]["value"] == 0.0
