"""A version made from another (moaa.dataset.derived, versions.write_derived): rows left out or changed
in the parent's own schema, untouched configs copied byte for byte, the parent never modified, the
result a complete version (manifest, card, LATEST) that verifies and loads; and the review hold on
publishing (`output.review: required`)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from test_report import folder_state
from version_helpers import _load, write_demo, write_parts

from moaa.dataset.derived import RowEdits, review_pending, rewrite_data
from moaa.dataset.hub import publish_version
from moaa.dataset.manifest import read_manifest
from moaa.dataset.versions import list_versions, verify_version, write_derived
from moaa.errors import InputError


def _answer(text):
    def change(row):
        row["messages"][-1]["content"] = text
        return row

    return change


def _derive(tmp_path, parent, edits, derived=None):
    return write_derived(tmp_path / "data", parent, lambda folder: rewrite_data(parent, folder, edits),
                         derived=derived or {"kind": "test"})  # fmt: skip


def _rows(version, config):
    return {r["prompt_id"]: r for f in sorted((version / "data" / config).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()}  # fmt: skip


def test_derived_version_drops_and_changes_rows_and_leaves_the_parent_alone(tmp_path, monkeypatch):
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts, max_shard_rows=8)  # several shards per split
    before = folder_state(v1.path)
    edits = {"sft": RowEdits(drop={"p003", "p010"}, change={"p005": _answer("A better answer.")}),
             "dpo": RowEdits(drop={"p007"})}  # fmt: skip
    v2 = _derive(tmp_path, v1.path, edits, {"kind": "review", "from": "demo@v1", "file": "review.jsonl",
                                            "sha256": "ab" * 32, "decisions": 4, "removed": {"sft": 2, "dpo": 1},
                                            "edited": {"sft": 1}, "flagged": {"dpo": 1}, "accepted": {}})  # fmt: skip

    assert folder_state(v1.path) == before  # versions are immutable
    assert v2.version == "v2" and (tmp_path / "data/demo/LATEST").read_text() == "v2\n"
    assert verify_version(v2.path) == []
    sft, old = _rows(v2.path, "sft"), _rows(v1.path, "sft")
    assert set(old) - set(sft) == {"p003", "p010"} and len(sft) == 38
    assert sft["p005"]["messages"] == [{"role": "user", "content": "Question 5?"},
                                       {"role": "assistant", "content": "A better answer."}]  # fmt: skip
    assert all(sft[pid] == old[pid] for pid in sft if pid != "p005")
    assert set(_rows(v1.path, "dpo")) - set(_rows(v2.path, "dpo")) == {"p007"}
    # untouched configs: the parent's files, byte for byte, under the same names
    m1, m2 = read_manifest(v1.path), read_manifest(v2.path)
    for config in ("trace", "failures"):
        assert {k: v for k, v in m2["files"].items() if k.startswith(f"data/{config}/")} == {
            k: v for k, v in m1["files"].items() if k.startswith(f"data/{config}/")
        }
    # the manifest: the parent's provenance, its own rows, the parent named, the derivation recorded
    assert m2["parent"] == "demo@v1" and m2["derived"]["kind"] == "review" and m2["inputs_digest"] is None
    assert m2["config"] == m1["config"] and m2["prompt_source"] == m1["prompt_source"]
    assert sum(m2["counts"]["rows"]["sft"].values()) == 38 and sum(m2["counts"]["rows"]["dpo"].values()) == 39
    card = (v2.path / "README.md").read_text()
    assert "## Review\n\nA person reviewed demo@v1: removed 3 rows, edited 1 row and flagged 1 row" in card
    assert "| sft | 2 | 1 | 0 | 0 |" in card and "Parent version: demo@v1" in card
    assert [v["version"] for v in list_versions(tmp_path / "data")] == ["v1", "v2"]
    loaded = _load(v2.path, "sft", tmp_path / "cache", monkeypatch)
    assert sum(len(split) for split in loaded.values()) == 38


def test_a_column_the_writer_does_not_know_is_kept(tmp_path):
    """A parent with a column of its own (written by another tool, or a later moaa) keeps it through a rewrite."""
    import pyarrow as pa

    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts)
    shard = next((v1.path / "data/sft").glob("train-*.parquet"))
    table = pq.read_table(shard)
    note = pa.struct([("status", pa.string()), ("reason", pa.string())])
    column = pa.array([{"status": "pass", "reason": "ok"}] * table.num_rows, note)
    extended = tmp_path / "extended"
    # a copy of v1 whose sft train shard has the extra column, its manifest re-hashed
    import shutil

    from moaa.dataset.manifest import hash_files, write_manifest

    shutil.copytree(v1.path.parent, extended / "demo")
    target = extended / "demo/v1" / shard.relative_to(v1.path)
    pq.write_table(table.append_column("review_note", column), target)
    manifest = read_manifest(extended / "demo/v1")
    manifest["files"] = hash_files(extended / "demo/v1")
    write_manifest(extended / "demo/v1", manifest)
    parent = extended / "demo/v1"
    pid = table.column("prompt_id")[0].as_py()
    edits = {"sft": RowEdits(change={pid: _answer("x")})}
    v2 = write_derived(extended, parent, lambda f: rewrite_data(parent, f, edits), derived={"kind": "test"})
    out = pq.read_table(next((v2.path / "data/sft").glob("train-*.parquet")))
    assert "review_note" in out.column_names and out.column("review_note")[1].as_py() == {
        "status": "pass",
        "reason": "ok",
    }
    assert verify_version(v2.path) == []


def test_nothing_left_is_refused_and_no_version_appears(tmp_path):
    parts = write_parts(tmp_path / "parts", n=2, dpo=False)
    v1 = write_demo(tmp_path / "data", {"sft": parts["sft"]})
    with pytest.raises(InputError, match="no rows would be left in demo@v2"):
        _derive(tmp_path, v1.path, {"sft": RowEdits(drop={"p000", "p001"})})
    assert sorted(p.name for p in (tmp_path / "data/demo").iterdir()) == ["LATEST", "v1"]


def test_a_parent_whose_files_were_modified_is_refused(tmp_path):
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts)
    trace = next((v1.path / "data/trace").glob("*.parquet"))
    trace.write_bytes(trace.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="the trace files do not match its manifest"):
        _derive(tmp_path, v1.path, {"sft": RowEdits(drop={"p001"})})
    assert not (tmp_path / "data/demo/v2").exists()


def test_review_required_holds_publishing_until_the_reviewed_version(tmp_path):
    parts = write_parts(tmp_path / "parts")
    config = json.loads(json.dumps(__import__("version_helpers").CONFIG))
    config["output"]["review"] = "required"
    v1 = write_demo(tmp_path / "data", parts, config=config)
    pending = review_pending(read_manifest(v1.path))
    assert pending == (
        "demo@v1 awaits review (its run set output.review: required): look at it with `moaa view demo@v1`, "
        "decide its rows, then `moaa review apply demo@v1` writes the reviewed version, which may be published"
    )
    with pytest.raises(InputError) as refused:
        publish_version(v1.path, "org/demo", True, "hf_x")
    assert str(refused.value) == pending
    assert publish_version(v1.path, "org/demo", True, None, dry_run=True).tag == "v1"  # a dry run may look
    v2 = _derive(tmp_path, v1.path, {"sft": RowEdits(drop={"p001"})}, {"kind": "review", "from": "demo@v1"})
    assert review_pending(read_manifest(v2.path)) is None
    plain = write_demo(tmp_path / "data", parts)
    assert review_pending(read_manifest(plain.path)) is None
