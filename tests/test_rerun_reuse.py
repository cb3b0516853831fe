"""A re-run of a finished config (issue 8): the new version copies its parent's data files and plots
when they were made from the same inputs, and the flow submits no task for a shard already DONE.

Run: .venv/bin/python -m pytest tests/test_rerun_reuse.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import make_parts

import moaa.dataset.files
import moaa.dataset.run_report
from moaa.dataset.manifest import read_manifest, verify_version
from moaa.dataset.versions import write_version
from tests.version_helpers import N_PROMPTS, _load, write_demo, write_parts


def _data(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted((path / "data").rglob("*")) if p.is_file()}


def _refuse(*_, **__):
    raise AssertionError("called although the parent was made from the same inputs")


def test_same_inputs_copy_the_parents_data(tmp_path, monkeypatch):
    parts = write_parts(tmp_path / "parts")
    v1 = write_demo(tmp_path / "data", parts)
    monkeypatch.setattr(moaa.dataset.files, "write_config", _refuse)  # no JSONL re-read, no parquet re-encoded
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


def _version(tmp_path: Path, drop_last_pair: bool = False) -> Path:
    parts = make_parts(tmp_path)
    if drop_last_pair:  # one DPO pair fewer: other scores and lengths
        dpo = parts["dpo"][0]
        dpo.write_text("".join(dpo.read_text().splitlines(keepends=True)[:-1]))
    info = write_version(
        tmp_path / "data", "demo", parts, config={"name": "demo"}, run_info={"methods": {"sft": "moa"}},
        test_size=0.0, split_seed=0, license="apache-2.0", tags=[], report=True,
    )  # fmt: skip
    return info.path


def _pngs(version: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((version / "report").glob("*.png"))}


def test_report_plots_are_copied_only_from_equal_inputs(tmp_path, monkeypatch, caplog):
    draw = moaa.dataset.run_report.draw_plots
    v1 = _version(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(moaa.dataset.run_report, "draw_plots", _refuse)
        v2 = _version(tmp_path)
    text = (v2 / "report.md").read_text()
    assert _pngs(v2) == _pngs(v1) and len(_pngs(v2)) == 4
    assert text.startswith("# Run report: demo@v2") and "(report/scores.png)" in text  # markdown rendered anew
    m1, m2 = read_manifest(v1), read_manifest(v2)
    assert m2["report_plots"] == m1["report_plots"] and verify_version(v2) == []
    assert {k for k in m2["files"] if k.startswith("report")} == {"report.md"} | {f"report/{n}" for n in _pngs(v1)}

    # Other inputs: drawn anew.
    drawn = []
    with monkeypatch.context() as patch:
        patch.setattr(
            moaa.dataset.run_report, "draw_plots", lambda data, folder: drawn.append(folder) or draw(data, folder)
        )
        v3 = _version(tmp_path, drop_last_pair=True)
    assert drawn and read_manifest(v3)["report_plots"]["digest"] != m2["report_plots"]["digest"]
    assert _pngs(v3)["scores.png"] != _pngs(v2)["scores.png"] and verify_version(v3) == []

    # Equal inputs, but the parent's PNG no longer matches its manifest: drawn anew, not copied.
    (v3 / "report" / "calls.png").write_bytes(b"not a png")
    v4 = _version(tmp_path, drop_last_pair=True)
    assert "drawing them anew" in caplog.text and verify_version(v4) == []
    assert _pngs(v4)["calls.png"] == _pngs(v2)["calls.png"]  # the same inputs drawn again


@pytest.mark.slow
def test_a_rerun_with_every_shard_done_submits_no_shard_task(tmp_path, prefect_harness, monkeypatch, capsys):
    from test_pipeline import run

    import flows.pipeline_flow
    from moaa.testing.openai_server import OpenAITestServer
    from moaa.work.finished import VERSION_RECORD
    from tests.conftest import make_config

    class Counting:
        def __init__(self, task):
            self.task, self.submitted = task, 0

        def submit(self, *args, **kwargs):
            self.submitted += 1
            return self.task.submit(*args, **kwargs)

    counting = Counting(flows.pipeline_flow.stage_shard)
    monkeypatch.setattr(flows.pipeline_flow, "stage_shard", counting)
    with OpenAITestServer() as srv:
        config = make_config(tmp_path, srv.base_url, "prompts.limit=6", "run.shard_size=2")
        first = run(config)
        asked, submitted = len(srv.requests), counting.submitted
        assert submitted == 3 and asked == 6 * 4
        # Killed after the version was written but before the work folder recorded it: the rerun is not
        # "up to date", so it writes the version again from the DONE shards.
        (next(tmp_path.rglob(VERSION_RECORD))).unlink()
        capsys.readouterr()
        second = run(config)
        assert counting.submitted == submitted and len(srv.requests) == asked  # no task, no model call
    assert "[sft] 6/6 prompts (0 failed)" in capsys.readouterr().err  # the DONE shards' prompts count as done
    totals = lambda summary: {stage: agg | {"this_run": None} for stage, agg in summary["stages"].items()}  # noqa: E731
    assert totals(second) == totals(first) and second["stages"]["sft"]["this_run"]["prompts"] == 0
    assert second["this_run"] == {"calls": 0, "cache_hits": 0, "cost": 0.0}
    assert (second["calls"], second["prompt_tokens"]) == (first["calls"], first["prompt_tokens"])
    v1, v2 = Path(first["version_path"]), Path(second["version_path"])
    assert (v1.name, v2.name) == ("v1", "v2") and read_manifest(v2)["data_copied_from"] == "test-run@v1"
    assert verify_version(v2) == [] and _data(v2) == _data(v1) and _pngs(v2) == _pngs(v1)
