"""The review gate without a browser: the review file (append-only, fsynced, a torn line skipped), and
`moaa review status|apply` writing the next version without the rejected rows and with the edits, the
review file and its hash in it, verification verdicts of edited texts cleared.

Run: .venv/bin/python -m pytest tests/test_view_review.py -x -q
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from test_report import folder_state
from version_helpers import _load, write_demo, write_parts
from view_helpers import verdict, with_verification

from moaa.cli import main
from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import verify_version
from moaa.errors import InputError
from moaa.fileio import sha256_file
from moaa.view.decisions import ReviewLog, review_path
from moaa.view.reviewed import apply_review


def _rows(version, config):
    return {r["prompt_id"]: r for f in sorted((version / "data" / config).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}  # fmt: skip


def test_the_latest_decision_wins_and_edits_stay_until_cleared(tmp_path):
    log = ReviewLog(tmp_path / "v1.review.jsonl")
    log.record("sft", "p1", "edit", field="messages", text="first edit")
    log.record("sft", "p1", "flag", note="check the units")
    assert log.state()["sft"]["p1"].to_dict() | {"at": ""} == {
        "decision": "flag", "note": "check the units", "edits": {"messages": "first edit"}, "at": ""}  # fmt: skip
    log.record("sft", "p1", "clear")
    log.record("dpo", "p1", "edit", field="chosen", text="a")
    log.record("dpo", "p1", "edit", field="rejected", text="b")
    state = log.state()
    assert "p1" not in state["sft"] and state["dpo"]["p1"].edits == {"chosen": "a", "rejected": "b"}
    with pytest.raises(InputError, match="an edit of a sft row names its field: messages"):
        log.record("sft", "p2", "edit", field="chosen", text="x")
    with pytest.raises(InputError, match="an edit needs the new text"):
        log.record("dpo", "p2", "edit", field="chosen", text="  ")
    with pytest.raises(InputError, match="config 'trace' is not reviewed"):
        log.record("trace", "p2", "reject")
    assert len(log.entries()) == 5


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_decision_is_kept(tmp_path, caplog):
    path = tmp_path / "v1.review.jsonl"
    log = ReviewLog(path)
    log.record("sft", "p1", "reject")
    with path.open("a") as fh:
        fh.write('{"at": "x", "config": "sft", "prompt_id": "p2", "act')  # killed mid-write
    log.record("sft", "p3", "accept")
    assert [e["prompt_id"] for e in log.entries()] == ["p1", "p3"]
    assert "v1.review.jsonl:2: not a review decision" in caplog.text
    assert path.read_text().count("\n") == 3  # the torn line stays on its own line


def _demo_with_verdicts(tmp_path, monkeypatch):
    """demo@v1 with a `verification` column on sft and dpo (as issue 29 writes it)."""
    import moaa.dataset.files as files

    parts = write_parts(tmp_path / "parts", n=12)
    for config in ("sft", "dpo"):
        for part in parts[config]:
            rows = [json.loads(x) for x in part.read_text().splitlines()]
            for row in rows:
                pid = row["prompt_id"]
                row["verification"] = verdict(pid) if config == "sft" else {
                    "chosen": verdict(pid, "chosen"), "rejected": verdict(pid, "rejected")}  # fmt: skip
            part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(files, "schemas", with_verification(files.schemas))
    return write_demo(tmp_path / "data", parts).path


def test_review_apply_writes_the_next_version_from_the_decisions(tmp_path, monkeypatch, capsys):
    v1 = _demo_with_verdicts(tmp_path, monkeypatch)
    before = folder_state(v1)
    checked = [pid for pid in _rows(v1, "sft") if verdict(pid)]
    edited = checked[0]
    log = ReviewLog.of(v1)
    log.record("sft", "p003", "reject", note="answers another question")
    log.record("sft", edited, "edit", field="messages", text="The corrected answer.")
    log.record("sft", "p005", "flag", note="keep, but odd")
    log.record("dpo", "p006", "reject")
    log.record("dpo", edited, "edit", field="rejected", text="A worse answer.")
    log.record("sft", "p007", "accept")
    root = str(tmp_path / "data")

    assert main(["review", "status", "demo@v1", "--root", root]) == 0
    assert capsys.readouterr().out.startswith(
        "demo@v1: dpo: reject 1, edit 1; sft: accept 1, reject 1, flag 1, edit 1 (6 decisions in "
    )
    assert main(["review", "apply", "demo@v1", "--root", root]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote demo@v2 ({tmp_path / 'data/demo/v2'}) from demo@v1: 2 rows removed, 2 edited, "
                          "1 flagged and kept; the review file (sha256 ")  # fmt: skip
    v2 = tmp_path / "data/demo/v2"
    assert folder_state(v1) == before and verify_version(v2) == []
    sft, dpo, old = _rows(v2, "sft"), _rows(v2, "dpo"), _rows(v1, "sft")
    assert set(old) - set(sft) == {"p003"} and set(_rows(v1, "dpo")) - set(dpo) == {"p006"}
    assert sft[edited]["messages"][-1] == {"role": "assistant", "content": "The corrected answer."}
    assert sft[edited]["verification"] is None  # the verdict judged the old text
    assert sft["p005"] == old["p005"] and sft["p007"] == old["p007"]  # flagged and accepted rows as they were
    assert dpo[edited]["rejected"] == [{"role": "assistant", "content": "A worse answer."}]
    assert dpo[edited]["verification"]["rejected"] is None
    assert dpo[edited]["verification"]["chosen"] == _rows(v1, "dpo")[edited]["verification"]["chosen"]

    manifest = read_manifest(v2)
    derived = manifest["derived"]
    assert manifest["parent"] == "demo@v1" and derived["from"] == "demo@v1" and derived["decisions"] == 6
    assert (v2 / "review.jsonl").read_bytes() == review_path(v1).read_bytes()
    assert derived["sha256"] == sha256_file(v2 / "review.jsonl") == manifest["files"]["review.jsonl"]["sha256"]
    assert (derived["removed"], derived["edited"], derived["flagged"]) == (
        {"sft": 1, "dpo": 1},
        {"sft": 1, "dpo": 1},
        {"sft": 1, "dpo": 0},
    )
    card = (v2 / "README.md").read_text()
    assert "A person reviewed demo@v1: removed 2 rows, edited 2 rows and flagged 1 row with a note (kept)." in card
    loaded = _load(v2, "sft", tmp_path / "cache", monkeypatch)
    assert sum(len(split) for split in loaded.values()) == 11

    # the same decisions again: refused; one more decision: the next version
    assert main(["review", "apply", "demo@v1", "--root", root]) == 2
    assert "demo@v1's decisions as they are now were applied already as demo@v2" in capsys.readouterr().err
    log.record("sft", "p008", "reject")
    assert main(["review", "apply", "demo@v1", "--root", root]) == 0
    assert set(old) - set(_rows(tmp_path / "data/demo/v3", "sft")) == {"p003", "p008"}


def test_apply_without_decisions_or_with_rows_the_version_lacks_is_one_line(tmp_path, capsys):
    v1 = write_demo(tmp_path / "data", write_parts(tmp_path / "parts", n=4)).path
    root = str(tmp_path / "data")
    assert main(["review", "apply", "demo@v1", "--root", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: demo@v1 has no review decisions (") and "moaa view demo@v1" in err
    ReviewLog.of(v1).record("sft", "p999", "reject")
    with pytest.raises(InputError, match=r"1 decided sft row\(s\) are not in demo@v1 \(e.g. 'p999'\)"):
        apply_review(tmp_path / "data", "demo@v1")
    assert sorted(p.name for p in (tmp_path / "data/demo").iterdir()) == ["LATEST", "v1", "v1.review.jsonl"]
