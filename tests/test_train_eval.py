"""`moaa train eval`: tiny models answer held-out prompts, a judge behind the local OpenAI-compatible
test server compares them in both orders; counts, win rate, intervals, LC win rate, files, defaults.

Run: .venv/bin/python -m pytest tests/test_train_eval.py -x -q
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from test_train import TINY_SETTINGS, write_demo_version
from tiny_models import build_tiny_causal_lm

from moaa.errors import ConfigError
from moaa.models.transformers_backend import unload
from moaa.testing.openai_server import OpenAITestServer
from moaa.train.evaluate import load_eval_settings, run_eval
from moaa.train.runs import read_lineage
from moaa.train.winrate import fit_logistic, lc_win_rate, length_feature, summarize, wilson_interval

_CANDIDATE = re.compile(r"<candidate id=(A|B)>\n(.*?)\n</candidate>", re.DOTALL)


def longer_wins(request: dict) -> str:
    """A deterministic judge: the longer answer wins, equal lengths tie (the same in both orders)."""
    found = dict(_CANDIDATE.findall(request["messages"][-1]["content"]))
    a, b = len(found["A"]), len(found["B"])
    winner = "A" if a > b else "B" if b > a else "tie"
    return json.dumps({"rationale": "length", "winner": winner})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return build_tiny_causal_lm(root / "a", seed=0), build_tiny_causal_lm(root / "b", seed=1)


@pytest.fixture(autouse=True)
def _fresh_models():
    yield
    unload()


def eval_config(tmp_path: Path, base_url: str, **extra) -> Path:
    config = {
        "endpoints": {"judge": {"base_url": base_url, "model": "judge-model", "max_retries": 1, "backoff_s": 0.01}},
        "judge": {"endpoint": "judge", "temperature": 0.0},
        "generation": {"temperature": 1.0, "max_tokens": 6, "seed": 0},
        "answers": {"truncated": "keep"},  # tiny random students rarely stop within 6 tokens
        "limit": None,
    } | extra
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_eval_counts_both_orders_and_writes_results(models, tmp_path: Path):
    data_root = tmp_path / "data"
    write_demo_version(data_root)
    with OpenAITestServer(responder=longer_wins) as server:
        result = run_eval(model=str(models[0]), baseline=str(models[1]), config=eval_config(tmp_path, server.base_url),
                          data_root=data_root, output=tmp_path / "eval")  # fmt: skip
        judge_calls = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    r = result.results
    records = r["per_prompt"]
    assert r["prompts"] == len(records) == 7 and r["unjudged"] == 0  # the 7 test prompts of the demo data set
    expected = [1.0 if x["model_chars"] > x["baseline_chars"] else 0.0 if x["model_chars"] < x["baseline_chars"]
                else 0.5 for x in records]  # fmt: skip
    assert [x["score"] for x in records] == expected
    assert (r["win"], r["tie"], r["loss"]) == (expected.count(1.0), expected.count(0.5), expected.count(0.0))
    assert r["win_rate"] == pytest.approx(sum(expected) / 7)
    assert r["order_agreement"] == 1.0 and len(judge_calls) == 14  # every prompt judged in both orders
    assert {x["model_first"] for x in records} <= {"A", "B", "tie"}
    assert tuple(r["ci"]) == pytest.approx(wilson_interval(sum(expected), 7))
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["win"] == r["win"] and saved["dataset"]["ref"] == "demo@v1"
    table = (tmp_path / "eval" / "results.md").read_text()
    assert f"| {r['win']} | {r['tie']} | {r['loss']} | 0 |" in table
    lineage = read_lineage(tmp_path / "eval")
    assert [p.get("role", p["kind"]) for p in lineage["parents"]] == ["dataset", "model", "baseline"]


def test_eval_with_the_request_cache_enabled_answers_a_repeat_from_it(models, tmp_path: Path):
    """Eval builds its clients like a run (moaa.models.session): `cache.enabled` puts them behind the cache."""
    data_root = tmp_path / "data"
    write_demo_version(data_root)
    cache = {"enabled": True, "path": str(tmp_path / "cache.sqlite")}
    with OpenAITestServer(responder=longer_wins) as server:
        config = eval_config(tmp_path, server.base_url, limit=3, cache=cache)
        runs = [run_eval(model=str(models[0]), baseline=str(models[1]), config=config, data_root=data_root,
                         output=tmp_path / f"eval-{i}") for i in range(2)]  # fmt: skip
        judge_calls = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    first, again = (r.results for r in runs)
    assert len(judge_calls) == 6  # the first eval's 3 prompts in both orders; the repeat asked nothing
    assert [x["score"] for x in again["per_prompt"]] == [x["score"] for x in first["per_prompt"]]
    assert [x["model_answer"] for x in again["per_prompt"]] == [x["model_answer"] for x in first["per_prompt"]]
    assert again["usage"]["judge"]["cache_hits"] == 6 and first["usage"]["judge"]["cache_hits"] == 0


def test_position_biased_judge_gives_ties(models, tmp_path: Path):
    data_root = tmp_path / "data"
    write_demo_version(data_root)
    always_a = json.dumps({"rationale": "first is best", "winner": "A"})
    with OpenAITestServer(responder=lambda req: always_a) as server:
        result = run_eval(model=str(models[0]), baseline=str(models[1]),
                          config=eval_config(tmp_path, server.base_url, limit=3, ci="bootstrap"),
                          data_root=data_root, output=tmp_path / "eval")  # fmt: skip
    r = result.results
    assert (r["win"], r["tie"], r["loss"], r["win_rate"], r["order_agreement"]) == (0, 3, 0, 0.5, 0.0)
    assert r["ci_method"] == "bootstrap" and tuple(r["ci"]) == (0.5, 0.5)
    assert r["lc_win_rate"] == pytest.approx(0.5)


def test_a_weighted_eval_reads_the_judges_probabilities_and_keeps_the_letters_beside_them(models, tmp_path: Path):
    """weighted: a judge that always writes "A" (the letters: every prompt a tie) but puts more mass on A when
    the longer answer is shown first separates the answers by its probabilities (AlpacaEval 2's weighted win
    rate); the letters' counts stay beside the weighted ones, in results.json and results.md."""
    from test_weighted_ratings import letter_reply

    def biased(request: dict):
        found = dict(_CANDIDATE.findall(request["messages"][-1]["content"]))
        sure = 0.9 if len(found["A"]) > len(found["B"]) else 0.6 if len(found["A"]) < len(found["B"]) else 0.5
        return letter_reply("A", {"A": sure, "B": 1 - sure})

    data_root = tmp_path / "data"
    write_demo_version(data_root)
    with OpenAITestServer(responder=biased) as server:
        result = run_eval(model=str(models[0]), baseline=str(models[1]),
                          config=eval_config(tmp_path, server.base_url, weighted=True),
                          data_root=data_root, output=tmp_path / "eval")  # fmt: skip
        bodies = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    r = result.results
    records = r["per_prompt"]
    longer = [x["model_chars"] - x["baseline_chars"] for x in records]
    expected = ["first" if d > 0 else "second" if d < 0 else "tie" for d in longer]
    assert {"first", "second"} & set(expected)  # the tiny answers differ in length: the probabilities decide
    assert (r["win"], r["tie"], r["loss"]) == (expected.count("first"), expected.count("tie"), expected.count("second"))
    assert r["letters"] == {"win": 0, "tie": 7, "loss": 0, "win_rate": 0.5}  # "A" in both orders: ties
    for x, e in zip(records, expected, strict=True):
        assert x["score"] == pytest.approx({"first": 0.65, "second": 0.35, "tie": 0.5}[e]) and x["letters"] == 0.5
    assert r["win_rate"] == pytest.approx(sum(x["score"] for x in records) / 7)
    assert all(b.get("top_logprobs") for b in bodies)
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "by the letters alone: 0 win, 7 tie, 0 loss, win rate 50.0%" in table


def words_by_model(request: dict) -> str:
    """The judge prefers the longer answer; the model writes 10 words, the baseline 3 (the server cuts
    an answer at max_tokens words, with finish_reason length)."""
    if request["model"] == "judge-model":
        return longer_wins(request)
    return " ".join(["word"] * (10 if request["model"] == "model-m" else 3))


@pytest.mark.parametrize(
    "answers, asked, judged, reasked, still_cut",
    [
        ({"truncated": "reask", "reask_max_tokens": 12}, [6, 12], 3, 3, 0),  # 6 -> 12 tokens: complete
        ({"truncated": "reask", "reask_max_tokens": 8}, [6, 8], 0, 3, 3),  # 8 is not enough: excluded
        ({"truncated": "drop"}, [6], 0, 0, 3),  # excluded at once
        ({"truncated": "keep"}, [6], 3, 0, 3),  # judged cut, and said so
    ],
)
def test_cut_answers_are_reasked_or_excluded_and_counted(tmp_path: Path, answers, asked, judged, reasked, still_cut):
    data_root = tmp_path / "data"
    write_demo_version(data_root)
    with OpenAITestServer(responder=words_by_model) as server:
        endpoints = {name: {"base_url": server.base_url, "model": name, "max_retries": 0}
                     for name in ("judge-model", "model-m", "base-m")}  # fmt: skip
        config = eval_config(tmp_path, server.base_url, limit=3, answers=answers, endpoints=endpoints,
                             judge={"endpoint": "judge-model", "temperature": 0.0})  # fmt: skip
        result = run_eval(model="model-m", baseline="base-m", config=config, data_root=data_root,
                          output=tmp_path / "eval")  # fmt: skip
        bodies = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    r = result.results
    model_budgets = sorted({b["max_tokens"] for b in bodies if b["model"] == "model-m"})
    assert model_budgets == asked and sum(b["model"] == "judge-model" for b in bodies) == 2 * judged
    assert r["cut"] | {"policy": None} == {
        "model": still_cut, "baseline": 0, "reasked": reasked, "excluded": 3 - judged if answers["truncated"] != "keep"
        else 0, "policy": None, "max_tokens": 6, "reask_max_tokens": answers.get("reask_max_tokens", 4096),
    }  # fmt: skip
    assert r["n"] == judged and r["unjudged"] == 0 and r["win"] == judged  # judged: the longer, complete answer
    excluded = [x for x in r["per_prompt"] if x.get("excluded") == "cut"]
    assert len(excluded) == r["cut"]["excluded"] and all(x["score"] is None and x["model_cut"] for x in excluded)
    table = (tmp_path / "eval" / "results.md").read_text()
    if still_cut or reasked:
        assert "Answers still cut at max_tokens (6 tokens" in table
        assert ("judged as they are" in table) == (answers["truncated"] == "keep")


def test_by_default_a_cut_answer_is_asked_again_before_it_is_judged(tmp_path: Path):
    data_root = tmp_path / "data"
    write_demo_version(data_root)
    with OpenAITestServer(responder=words_by_model) as server:
        names = ("judge-model", "model-m", "base-m")
        endpoints = {name: {"base_url": server.base_url, "model": name} for name in names}
        config = eval_config(tmp_path, server.base_url, limit=2, endpoints=endpoints,
                             judge={"endpoint": "judge-model", "temperature": 0.0})  # fmt: skip
        raw = yaml.safe_load(config.read_text())
        del raw["answers"]  # the shipped default
        config.write_text(yaml.safe_dump(raw))
        result = run_eval(model="model-m", baseline="base-m", config=config, data_root=data_root,
                          output=tmp_path / "eval")  # fmt: skip
        bodies = [r["body"] for r in server.requests if r["body"]["model"] == "model-m"]
    assert sorted(b["max_tokens"] for b in bodies) == [6, 6, 12, 12]  # cut at 6, complete at 12
    assert [x["model_chars"] for x in result.results["per_prompt"]] == [len(" ".join(["word"] * 10))] * 2


def test_defaults_follow_lineage(models, tmp_path: Path):
    from moaa.train.sft import run_sft

    data_root, runs = tmp_path / "data", tmp_path / "runs"
    write_demo_version(data_root, "first")
    write_demo_version(data_root, "other")  # newer, but the model was not trained on it
    sft = run_sft(model=str(models[0]), data="first", overrides=TINY_SETTINGS, data_root=data_root, runs_root=runs)
    with OpenAITestServer(responder=longer_wins) as server:
        result = run_eval(config=eval_config(tmp_path, server.base_url, limit=2), data_root=data_root, runs_root=runs)
    r = result.results
    assert r["model"] == str(sft.output.resolve()) and r["baseline"] == str(models[0].resolve())
    assert r["dataset"]["ref"] == "first@v1" and r["prompts"] == 2
    assert result.output.parent == sft.output / "eval" and (result.output / "results.md").is_file()


def test_eval_settings_are_strict(tmp_path: Path):
    assert load_eval_settings("configs/train/eval.yaml").judge.endpoint == "local"
    with pytest.raises(ConfigError, match="unknown key 'limt'"):
        load_eval_settings("configs/train/eval.yaml", ["limt=3"])
    with pytest.raises(ConfigError, match="judge.endpoint 'nope' is not under endpoints"):
        load_eval_settings("configs/train/eval.yaml", ["judge.endpoint=nope"])


@pytest.mark.parametrize(
    "wins, n, lo, hi", [(7, 10, 0.3968, 0.8922), (0, 5, 0.0, 0.4345), (5, 5, 0.5655, 1.0), (2.5, 5, 0.1704, 0.8296)]
)
def test_wilson_interval(wins, n, lo, hi):
    assert wilson_interval(wins, n) == pytest.approx((lo, hi), abs=1e-4)


def test_length_controlled_win_rate_discounts_length():
    # The model wins exactly when it is longer: its raw win rate is high, but at equal length it is a coin flip.
    model_len = [100, 300, 120, 280, 90, 310, 110, 290]
    base_len = [200] * 8
    outcomes = [0, 1, 0, 1, 0, 1, 0, 1]
    feature = length_feature(model_len, base_len)
    assert lc_win_rate(outcomes, feature) == pytest.approx(0.5, abs=0.02)
    # Longer in every prompt and winning most: LC win rate falls below the raw one.
    longer = summarize([1, 1, 1, 0, 1, 1, 0.5, 1], [300, 420, 380, 210, 500, 330, 260, 450], [200] * 8)
    assert longer["win_rate"] == pytest.approx(0.8125) and longer["lc_win_rate"] < longer["win_rate"]
    # No length difference: the LC win rate is the raw one (up to the small ridge penalty).
    same = summarize([1, 1, 0, 0.5], [5] * 4, [5] * 4)
    assert same["lc_win_rate"] == pytest.approx(0.625, abs=0.01)
    a, b = fit_logistic([0.0] * 4, [1, 1, 0, 0.5])
    assert 1 / (1 + math.exp(-a)) == pytest.approx(0.625, abs=0.01) and b == pytest.approx(0.0)
