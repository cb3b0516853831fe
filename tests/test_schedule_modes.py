"""prompts.schedule: repeated runs take the prompts no version holds (next, resample), write no version
when nothing is new, and every version's manifest records the prompts it added."""

from __future__ import annotations

import json
from pathlib import Path

from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import make_config
from tests.test_pipeline import run


def write_prompts(path: Path, start: int, count: int, mode: str = "w") -> Path:
    with path.open(mode, encoding="utf-8") as fh:
        for i in range(start, start + count):
            fh.write(json.dumps({"prompt": f"Question {i}: name {i} uses of a paperclip."}) + "\n")
    return path


def scheduled(tmp_path: Path, base_url: str, mode: str, limit: int = 2, source: Path | None = None):
    source = source or tmp_path / "prompts.jsonl"
    return make_config(
        tmp_path, base_url, f"prompts.path={source}", f"prompts.limit={limit}", f"prompts.schedule={mode}",
        "prompts.dedup=false",
    )  # fmt: skip


def asked(srv: OpenAITestServer) -> int:
    return sum(1 for r in srv.requests if r["path"] == "/v1/chat/completions")


def questions(summary: dict) -> list[str]:
    """The user turns of a version's SFT rows, in prompt order."""
    from tests.pipeline_helpers import version_rows

    return sorted(r["messages"][0]["content"] for r in version_rows(summary["version_path"], "sft"))


def added(summary: dict) -> dict:
    return json.loads((Path(summary["version_path"]) / "moaa_manifest.json").read_text())["prompts_added"]


def test_next_takes_the_next_prompts_and_is_up_to_date_when_none_is_new(tmp_path, prefect_harness):
    write_prompts(tmp_path / "prompts.jsonl", 0, 5)
    with OpenAITestServer() as srv:
        config = scheduled(tmp_path, srv.base_url, "next")
        v1 = run(config)
        assert (v1["version"], asked(srv)) == ("v1", 2 * 4)  # 2 prompts x (3 proposers + aggregator)
        v2 = run(config)
        assert (v2["version"], asked(srv)) == ("v2", 4 * 4)  # only the 2 new prompts were asked
        v3 = run(config)
        nothing = run(config)
        assert asked(srv) == 5 * 4 and nothing["up_to_date"] and nothing["version_path"] == v3["version_path"]
        assert nothing["line"].startswith(f"up to date: {v3['version_path']} (5 SFT rows")
        write_prompts(tmp_path / "prompts.jsonl", 5, 2, mode="a")  # the source grows
        v4 = run(config)
    assert not (tmp_path / "data" / "test-run" / "v5").exists()
    assert [q.split(":")[0] for q in questions(v1)] == ["Question 0", "Question 1"]
    assert [q.split(":")[0] for q in questions(v2)] == [f"Question {i}" for i in range(4)]  # v1's rows and 2 new
    assert len(questions(v3)) == 5 and len(questions(v4)) == 7
    assert [(added(v)["count"], added(v)["parent"]) for v in (v1, v2, v3, v4)] == [
        (2, None), (2, "test-run@v1"), (1, "test-run@v2"), (2, "test-run@v3"),
    ]  # fmt: skip
    assert set(added(v2)["ids"]).isdisjoint(added(v1)["ids"]) and added(v2)["schedule"] == "next"


def test_resample_draws_new_prompts_each_run_and_all_writes_no_copy_of_a_finished_run(tmp_path, prefect_harness):
    write_prompts(tmp_path / "prompts.jsonl", 0, 8)
    with OpenAITestServer() as srv:
        first = run(scheduled(tmp_path, srv.base_url, "resample"))
        second = run(scheduled(tmp_path, srv.base_url, "resample"))
        assert asked(srv) == 4 * 4
        source = tmp_path / "prompts.jsonl"
        once = run(scheduled(tmp_path / "all", srv.base_url, "all", limit=3, source=source))
        again = run(scheduled(tmp_path / "all", srv.base_url, "all", limit=3, source=source))
    one, two = added(first)["ids"], added(second)["ids"]
    assert len(one) == len(two) == 2 and set(one).isdisjoint(two) and len(questions(second)) == 4
    # all: the same prompts again are up to date, not a v2 holding v1's rows once more
    assert once["version"] == "v1" and again["up_to_date"] and again["version_path"] == once["version_path"]
    assert added(once) | {"ids": None} == {"schedule": "all", "count": 3, "parent": None, "ids": None,
                                            "sha256": added(once)["sha256"]}  # fmt: skip
