"""A re-run of a finished config (issue 8): the new version copies its parent's data files when
they were made from the same inputs.

Run: .venv/bin/python -m pytest tests/test_rerun_reuse.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_versions import N_PROMPTS, _load, write_demo, write_parts

import moaa.versions
from moaa.manifest import read_manifest, verify_version


def _data(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted((path / "data").rglob("*")) if p.is_file()}


def _refuse(*_, **__):
    raise AssertionError("called although the parent was made from the same inputs")


def test_same_inputs_copy_the_parents_data(tmp_path, monkeypatch):
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts)
    monkeypatch.setattr(moaa.versions, "write_config", _refuse)  # no JSONL re-read, no parquet re-encoded
    v2 = write_demo(tmp_path / "data", parts, run_info={"timings": {"seconds": 1.0}})
    monkeypatch.undo()

    assert v2.version == "v2" and _data(v2.path) == _data(v1.path)
    for copy in (v2.path / "data").rglob("*.parquet"):  # plain copies: each version stands alone
        original = v1.path / copy.relative_to(v2.path)
        assert copy.stat().st_ino != original.stat().st_ino and copy.stat().st_nlink == 1
    m1, m2 = read_manifest(v1.path), read_manifest(v2.path)
    assert m2["parent"] == "demo@v1" and m2["data_copied_from"] == "demo@v1" and m1["data_copied_from"] is None
    assert m2["inputs_digest"] == m1["inputs_digest"] and m2["counts"]["rows"] == m1["counts"]["rows"]
    assert m2["counts"]["failures_by_reason"] == m1["counts"]["failures_by_reason"]
    assert m2["timings"] == {"seconds": 1.0}  # this run's run_info, not the parent's
    assert verify_version(v2.path) == []
    assert "# demo v2" in (v2.path / "README.md").read_text()
    sft = _load(v2.path, "sft", tmp_path / "cache", monkeypatch)
    assert sum(sft.num_rows.values()) == N_PROMPTS


@pytest.mark.parametrize("change", ["row", "test_size", "missing parent file"])
def test_changed_inputs_or_a_broken_parent_write_fresh_data(tmp_path, change, caplog):
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts)
    kwargs = {}
    if change == "row":
        first = parts["sft"][0]
        first.write_text(first.read_text().replace("Question 0?", "Question zero?", 1))
    elif change == "test_size":
        kwargs["test_size"] = 0.5
    else:
        next((v1.path / "data" / "sft").glob("train-*.parquet")).unlink()
    v2 = write_demo(tmp_path / "data", parts, **kwargs)

    m1, m2 = read_manifest(v1.path), read_manifest(v2.path)
    assert m2["parent"] == "demo@v1" and m2["data_copied_from"] is None
    assert verify_version(v2.path) == []
    fresh = write_demo(tmp_path / "other", parts, **kwargs)  # what the same inputs give without a parent
    assert _data(v2.path) == _data(fresh.path) and m2["inputs_digest"] == read_manifest(fresh.path)["inputs_digest"]
    if change == "missing parent file":
        assert m2["inputs_digest"] == m1["inputs_digest"] and "writing them anew" in caplog.text
        assert _data(v2.path).keys() > _data(v1.path).keys()
    else:
        assert m2["inputs_digest"] != m1["inputs_digest"] and _data(v2.path) != _data(v1.path)
