"""The margins benchmark against the test server: policy samples, pointwise and pairwise readings, and the
prompts that keep a pair at the old margin and at each kind's default, in one table."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

from benchmarks.bench_margins import main
from moaa.testing.openai_replies import Reply
from moaa.testing.openai_server import OpenAITestServer

_SHOWN = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
SAMPLES = itertools.count()


def quality(text: str) -> int:
    return int(text.rsplit("q", 1)[1])


def responder(req: dict):
    """The policy (one call per sample on a local endpoint) writes answers of quality 1-5 in turn
    (q<digit>); the judges rate by that quality: pointwise 3 or 4, pairwise by a small margin."""
    shown = dict(_SHOWN.findall(next(m["content"] for m in req["messages"] if m["role"] == "user")))
    if not shown:
        return f"answer q{next(SAMPLES) % 5 + 1}"
    if "A" in shown:
        a, b = quality(shown["A"]), quality(shown["B"])
        p = 0.5 + 0.08 * (a - b)  # P(A): the better answer a little more likely
        letter = "A" if p >= 0.5 else "B"
        top = {"A": math.log(p), "B": math.log(1 - p)} if letter == "A" else {"B": math.log(1 - p), "A": math.log(p)}
        return Reply(f'{{"winner": "{letter}"}}', (('{"winner": "', {'{"winner": "': 0.0}), (letter, top), ('"}', {})))
    return json.dumps({"helpfulness": {"rating": 4 if quality(shown["1"]) > 2 else 3}})


def test_the_table_compares_pairs_kept_at_the_old_and_the_default_margins(tmp_path: Path, capsys):
    with OpenAITestServer(responder=responder) as srv:
        assert main(["--base-url", srv.base_url, "--model", "m", "--n", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line[:36].strip(): line[36:].split() for line in out.splitlines()[2:] if line[:1].isalpha()}
    # prompts, quartiles, kept at 0.5, the default, kept at the default; then kept at 0.02, 0.05, 0.1, 0.25, 0.5
    assert rows["pairwise letters"] == ["2", "1.00/1.00/1.00", "2", "0.1", "2", "2", "2", "2", "2", "2"]
    assert rows["pairwise weighted"][0] == "2"
    assert rows["pairwise weighted"][2:] == ["0", "0.1", "2", "2", "2", "2", "2", "0"]
    assert rows["reward_model (ArmoRM-like example)"] == ["1", "0.09/0.09/0.09", "0", "0", "1", "1", "1", "0", "0", "0"]
    (saved,) = tmp_path.glob("margins-*.json")  # the partial file is gone once the run is done
    assert len(json.loads(saved.read_text())["results"]) == 2
