"""Rows become parquet through Arrow's JSON reader (moaa.dataset.files._SplitWriter): the values a
row holds come back as written, a row of the wrong type is named by file and line, and writing a
version imports no pandas (pyarrow's from_pylist did, ~60 MiB of a run's peak memory).

Run: .venv/bin/python -m pytest tests/test_parquet_rows.py -x -q
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from moaa.dataset.versions import write_version
from moaa.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _write(root: Path, parts: dict[str, list[Path]]):
    return write_version(root, "rows", parts, config={"name": "rows"}, run_info={}, test_size=0.0, split_seed=1,
                         license="apache-2.0", tags=[])  # fmt: skip


def _sft(pid: str, answer: str, **extra) -> dict:
    messages = [{"role": "user", "content": f"Q {pid}"}, {"role": "assistant", "content": answer}]
    return {"prompt_id": pid, "messages": messages, "source": "t", "method": "moa", "models": ["a"]} | extra


def _step(pid: str, **extra) -> dict:
    return {"prompt_id": pid, "stage": "sft", "kind": "proposal", "text": "t", "model": "m", "turn": 0, "layer": 0,
            "index": 0, "selected": True, "prompt_tokens": 1, "completion_tokens": 2, "latency_s": 0.5,
            "finish_reason": "stop", "cached": False, "score": 1.0} | extra  # fmt: skip


def _read(version_dir: Path, config: str) -> list[dict]:
    files = sorted((version_dir / "data" / config).glob("*.parquet"))
    return sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["prompt_id"])


def test_rows_come_back_as_written(tmp_path: Path):
    answers = {"p0": 'Zeilen\n"zitiert"\t\\ und ünïcödé 漢字 🙂', "p1": "", "p2": "x" * 200_000}
    sft = [_sft(pid, text, category=None if pid == "p0" else "c") for pid, text in answers.items()]
    sft.append({"prompt_id": "p3", "messages": [], "models": None})  # columns missing: null
    verdict = {
        "status": "pass",
        "reason": "final answer 80 matches",
        "score": 1.0,
        "checks": ["answer"],
        "answer": "final",
    }
    sft[0]["verification"] = verdict
    sft[1]["verification"] = {"status": "fail", "reason": "1 of 2", "score": 0.5, "checks": ["tests"]}  # no `answer`
    trace = [
        _step("p0", score=float("nan"), meta={"agree": True, "ü": [1, 2]}),
        _step("p1", score=float("inf"), turn=3, latency_s=2),  # an int in a float column
        _step("p2", score=None, selected=None, text=None),
    ]
    parts = {"sft": [_jsonl(tmp_path / "sft.jsonl", sft)], "trace": [_jsonl(tmp_path / "trace.jsonl", trace)]}
    info = _write(tmp_path / "data", parts)

    rows = _read(info.path, "sft")
    assert [r["messages"][-1]["content"] for r in rows[:3]] == list(answers.values())
    assert rows[0]["messages"][0] == {"role": "user", "content": "Q p0"}
    assert rows[0]["category"] is None and rows[1]["category"] == "c" and rows[0]["models"] == ["a"]
    assert rows[3] == {"prompt_id": "p3", "messages": [], "source": None, "method": None, "models": None,
                       "category": None, "verification": None, "reference": None}  # fmt: skip
    assert rows[0]["verification"] == verdict
    assert rows[1]["verification"] == {"status": "fail", "reason": "1 of 2", "score": 0.5, "checks": ["tests"],
                                       "answer": None}  # fmt: skip
    steps = _read(info.path, "trace")
    assert math.isnan(steps[0]["score"]) and json.loads(steps[0]["meta"]) == {"agree": True, "ü": [1, 2]}
    assert steps[1]["score"] == math.inf and steps[1]["turn"] == 3 and steps[1]["latency_s"] == 2.0
    assert steps[2]["score"] is None and steps[2]["selected"] is None and steps[2]["text"] is None
    assert isinstance(steps[1]["latency_s"], float) and steps[1]["agent"] is None


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"category": 7}, "a number for a string"),
        ({"method": {"name": "moa"}}, "an object for a string"),
        ({"messages": [{"role": "user", "content": "q"}], "models": [["a"]]}, "a list of lists for strings"),
        ({"models": "abc"}, "text for a list of strings (from_pylist would split it into characters)"),
    ],
)
def test_a_row_of_the_wrong_type_is_named_by_its_file_and_line(tmp_path: Path, bad: dict, why: str):
    rows = [_sft("p0", "a"), _sft("p1", "b"), _sft("p2", "c") | bad]
    parts = {"sft": [_jsonl(tmp_path / "sft.jsonl", rows)]}
    with pytest.raises(InputError, match=r"sft\.jsonl:3: a sft row has a value of the wrong type"):
        _write(tmp_path / "data", parts)
    assert not (tmp_path / "data" / "rows" / "v1").exists(), why


def test_an_integer_too_large_for_its_column_is_named_not_a_traceback(tmp_path: Path):
    parts = {"trace": [_jsonl(tmp_path / "trace.jsonl", [_step("p0"), _step("p1", turn=2**63)])]}
    with pytest.raises(InputError, match=r"trace\.jsonl:2: a trace row has a value of the wrong type"):
        _write(tmp_path / "data", parts)


def test_writing_a_version_imports_no_pandas(tmp_path: Path):
    """The version a run writes, with its card and run report, in a fresh interpreter."""
    sft = [_sft(f"p{i}", "answer " * i) for i in range(30)]
    trace = [_step(f"p{i}", meta={"i": i}) for i in range(30)]
    said = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    dpo = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": "q"}], "chosen": said("good"),
            "rejected": said("b"), "score_chosen": 8.0, "score_rejected": 2, "chosen_model": "a",
            "rejected_model": "b"} for i in range(30)]  # fmt: skip
    parts = {name: [str(_jsonl(tmp_path / f"{name}.jsonl", rows))] for name, rows in
             (("sft", sft), ("trace", trace), ("dpo", dpo))}  # fmt: skip
    code = (
        "import json, sys\n"
        "from moaa.dataset.versions import write_version\n"
        f"info = write_version({str(tmp_path / 'data')!r}, 'rows', json.loads({json.dumps(json.dumps(parts))}), "
        "config={'name': 'rows'}, run_info={}, test_size=0.2, split_seed=1, license='apache-2.0', tags=[], "
        "report=True)\n"
        "print(json.dumps({'path': str(info.path), 'report': str(info.report),\n"
        "                  'pandas': sorted(m for m in sys.modules if m.split('.')[0] == 'pandas')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["pandas"] == [], "writing a version imported pandas"
    assert len(_read(Path(got["path"]), "sft")) == 30 and len(_read(Path(got["path"]), "dpo")) == 30
    assert Path(got["report"]).is_file()
