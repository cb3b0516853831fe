"""The run report: real PNG plots with data in them, every section named, graceful without configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moaa.dataset.manifest import read_manifest, verify_version
from moaa.dataset.run_report import SECTIONS, report_markdown_for_artifact, write_report
from moaa.dataset.versions import write_version

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _msgs(*pairs: str) -> list[dict]:
    return [{"role": role, "content": text} for role, text in zip(("user", "assistant") * 2, pairs, strict=False)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _step(pid: str, stage: str, kind: str, text: str, **extra) -> dict:
    return {
        "prompt_id": pid,
        "stage": stage,
        "kind": kind,
        "text": text,
        "agent": extra.pop("agent", ""),
        "model": extra.pop("model", "m-a"),
        "turn": 0,
        "layer": 1,
        "prompt_tokens": 20,
        "completion_tokens": 10,
    } | extra


def make_parts(tmp_path: Path, configs: tuple[str, ...] = ("sft", "dpo", "trace", "failures")) -> dict[str, list[Path]]:
    """Hand-made JSONL parts: 3 SFT rows, 4 DPO pairs, a trace with proposals and pairwise verdicts, 2 failures."""
    sft = [
        {
            "prompt_id": f"p{i}",
            "messages": _msgs(f"Question {i}?", "Final " + "x" * (50 * (i + 1))),
            "source": "hand",
            "method": "moa",
            "models": ["m-a", "m-agg"],
        }
        for i in range(3)
    ]
    dpo = [
        {
            "prompt_id": f"q{i}",
            "prompt": _msgs(f"Pick {i}?"),
            "chosen": [{"role": "assistant", "content": "good" * (i + 5)}],
            "rejected": [{"role": "assistant", "content": "bad" * (i + 2)}],
            "score_chosen": 4.0 + i / 4,
            "score_rejected": 1.0 + i / 2,
            "chosen_model": "m-a",
            "rejected_model": "m-a",
        }
        for i in range(4)
    ]
    trace = []
    for i in range(3):
        trace += [
            _step(
                f"p{i}",
                "sft",
                "proposal",
                f"Proposal {j} to {i}",
                agent=f"proposer{j}",
                index=j,
                selected=j != 2,
                model=f"m-{'ab'[j % 2]}",
            )
            for j in range(3)
        ]
        trace.append(_step(f"p{i}", "sft", "aggregate", "Final", agent="aggregator", layer=2, model="m-agg"))
    pairs = [{"other": 1, "agree": True}, {"other": 2, "agree": False}, {"other": 2, "agree": True}]
    for i in range(4):
        picks = [{"count": 1, "pick": "rejected"}, {"count": 2, "pick": "chosen"}]
        trace += [
            _step(f"q{i}", "preference", "sample", f"cand {j}", score=float(j), index=j, meta=json.dumps(picks[j]))
            for j in range(2)
        ]
        meta = json.dumps({"pairs": pairs[: 1 + i % 3]})
        trace.append(_step(f"q{i}", "preference", "verdict", "won 1", score=1.0, index=1, meta=meta))
    fails = [
        {"prompt_id": "f1", "stage": "sft", "reason": "aggregator_failed", "error": "HTTP 500"},
        {"prompt_id": "f2", "stage": "preference", "reason": "policy_failed", "error": "timeout"},
        {"prompt_id": "f3", "stage": "sft", "reason": "aggregator_failed", "error": "HTTP 500"},
    ]
    made = {"sft": sft, "dpo": dpo, "trace": trace, "failures": fails}
    return {c: [_jsonl(tmp_path / f"{c}.jsonl", made[c])] for c in configs}


def make_version(tmp_path: Path, configs: tuple[str, ...] = ("sft", "dpo", "trace", "failures")) -> Path:
    run_info = {
        "stats": {
            "ep": {
                "calls": 40,
                "cache_hits": 3,
                "retries": 2,
                "failures": 1,
                "prompt_tokens": 900,
                "completion_tokens": 300,
                "cost": 0.0123,
            }
        },
        "counts": {"prompts": {"read": 10, "kept": 7, "dropped": {"duplicate": 3}}},
        "methods": {"sft": "moa", "scorer": "pairwise"},
        "timings": {"seconds": 12.5},
    }
    info = write_version(
        tmp_path / "data",
        "demo",
        make_parts(tmp_path, configs),
        config={"name": "demo"},
        run_info=run_info,
        test_size=0.0,
        split_seed=0,
        license="apache-2.0",
        tags=[],
        report=True,
    )
    assert info.report == info.path / "report.md"
    return info.path


def assert_real_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000
    image = imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 600 and image.shape[2] in (3, 4)
    # Not blank: bars and lines put more than a handful of colours on the white canvas.
    colours = {tuple(px) for px in image[::4, ::4, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colours) > 10


def folder_state(folder: Path) -> dict[str, tuple[int, str]]:
    """{relative path: (mtime_ns, sha256)} of every file under `folder`."""
    from moaa.fileio import sha256_file

    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_report_has_every_plot_and_section(tmp_path):
    version = make_version(tmp_path)
    path = version / "report.md"
    pngs = sorted(p.name for p in (version / "report").iterdir())
    assert pngs == ["calls.png", "failures.png", "lengths.png", "scores.png"]
    for png in pngs:
        assert_real_png(version / "report" / png)
    text = path.read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    for png in pngs:
        assert f"(report/{png})" in text
    assert "- rows: sft train 3; dpo train 4; trace train 24; failures train 3" in text
    assert "| ep | 40 | 3 | 2 | 1 | 900 | 300 | 0.0123 |" in text
    assert "- pairs: 4" in text and "- margin: mean 2.62" in text
    assert "| sft | proposal | m-a | 2.00 | 60 |" in text  # proposers 0 and 2, 30 tokens each
    assert "- sft:aggregator_failed: 2" in text and "- preference:policy_failed: 1" in text
    assert "position-swap disagreement: 28.6% (2 of 7 pairwise judgements" in text
    assert "**proposal proposer2** (layer 1, m-a, not selected)" in text and "Proposal 2 to 0" in text
    assert "**Chosen** (score 4, m-a)" in text
    # The report's files are in the manifest: the version still verifies.
    assert verify_version(version) == []
    assert "report/scores.png" in read_manifest(version)["files"]


def test_report_skips_plots_without_their_config(tmp_path):
    version = make_version(tmp_path, configs=("sft",))
    text = (version / "report.md").read_text()
    assert sorted(p.name for p in (version / "report").iterdir()) == ["lengths.png"]
    assert_real_png(version / "report" / "lengths.png")
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    assert "n/a (no dpo config in this version)" in text
    assert "n/a (no trace config in this version)" in text
    assert "position-swap disagreement: n/a" in text
    assert verify_version(version) == []


def test_report_elsewhere_leaves_the_version_untouched(tmp_path):
    version = make_version(tmp_path)
    before = folder_state(version)
    path = write_report(version, out_dir=tmp_path / "out")
    assert path == tmp_path / "out" / "report.md" and (tmp_path / "out" / "report" / "calls.png").is_file()
    assert path.read_text() == (version / "report.md").read_text()  # the report the version was written with
    assert folder_state(version) == before


def test_artifact_markdown_embeds_its_plots(tmp_path):
    """The Prefect UI cannot read the flow's disk: each plot travels inside the markdown as a data URI."""
    import base64
    import re

    version = make_version(tmp_path)
    text = report_markdown_for_artifact(version)
    assert text.startswith("# Run report: demo@v1")
    embedded = dict(re.findall(r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text))
    assert base64.b64decode(embedded["Scores"]) == (version / "report" / "scores.png").read_bytes()
    assert {"Scores", "Lengths", "Calls and tokens"} <= set(embedded)
    assert str(tmp_path) not in text and "position-swap disagreement: 28.6%" in text


@pytest.mark.slow
def test_a_pipeline_run_writes_its_report_with_the_version(tmp_path, prefect_harness):
    import re

    import yaml
    from test_estimate import PREF, respond, variant_raw

    from flows.pipeline_flow import moaa_pipeline, task_runner_for
    from moaa.config import dump_config, parse_config
    from moaa.testing.openai_server import OpenAITestServer

    variant = {"preference": PREF | {"scorer": {"kind": "pairwise", "judges": [{"endpoint": "judge"}]}}}
    with OpenAITestServer(responder=respond) as srv:
        config = parse_config(variant_raw(tmp_path, srv.base_url, variant))
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(dump_config(config)))
        summary = moaa_pipeline.with_options(task_runner=task_runner_for(config))(str(path))
    version = Path(summary["version_path"])
    assert summary["report_path"] == str(version / "report.md")
    text = (version / "report.md").read_text()
    assert verify_version(version) == []
    for png in (version / "report").glob("*.png"):
        assert_real_png(png)
    assert {p.name for p in (version / "report").glob("*.png")} == {"scores.png", "lengths.png", "calls.png"}
    bias = summary["bias"]
    judged, flipped = bias["pairs_judged"], bias["swap_disagreements"]
    assert f"({flipped} of {judged} pairwise judgements" in text
    assert "| sft | proposal | test-model | 3.00 |" in text and "| preference | verdict | judge-model | 3.00 |" in text
    # The Prefect artifact carries the run summary and the report, its plots embedded.
    import httpx
    from prefect.settings import PREFECT_API_URL

    # Raw API call: this Prefect client sends nulls the server's artifact filter rejects.
    query = {"artifacts": {"key": {"any_": ["moaa-test-run"]}}, "limit": 5, "offset": 0, "sort": "CREATED_DESC"}
    found = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=query).json()
    data = found[0]["data"]
    assert "moaa run 'test-run' finished" in data and "## Judge consistency" in data
    # Plots travel inside the markdown; no image links to the flow's disk, which the UI cannot read.
    # (The summary's "data set: <folder>" line names the local version on purpose.)
    assert "![Scores](data:image/png;base64," in data
    assert not re.search(r"!\[[^\]]*\]\((?!data:)", data), "an image links to a file instead of embedding it"


def test_finish_run_writes_the_version_once_report_included(tmp_path, monkeypatch):
    """Data, card, report and manifest are complete before the rename: the files of the renamed folder
    never change afterwards, and the manifest lists report.md with its hash."""
    import moaa.dataset.versions
    from moaa.fileio import sha256_file, write_json_atomic
    from moaa.models.stats import RunStats
    from moaa.work.finishing import finish_run
    from moaa.work.run_plan import RunPlan
    from moaa.work.totals import collect
    from tests.conftest import make_config

    out = tmp_path / "work" / "sft" / "shard-00000"
    out.mkdir(parents=True)
    parts = make_parts(out, ("sft", "trace", "failures"))
    for config, name in (("sft", "rows"), ("trace", "trace"), ("failures", "failures")):
        parts[config][0].rename(out / f"{name}.jsonl")
    counts = {"prompts": 6, "resumed": 0, "rows": 3, "failed": 3, "dropped": {}, "counters": {}}
    done = {"stage": "sft", "shard": "shard-00000.jsonl", "counts": counts, "stats": RunStats().to_dict(),
            "seconds": 1.0, "finished_at": 2.0}  # fmt: skip
    write_json_atomic(out / "DONE", done)
    out.with_suffix(".jsonl").write_text("".join(f'{{"prompt_id": "p{i}"}}\n' for i in range(6)))  # the input shard
    plan = RunPlan(make_config(tmp_path), tmp_path / "work", {"sft": [(out.with_suffix(".jsonl"), out)]},
                   {"read": 6, "kept": 6, "dropped": {}}, {}, started=1.0)  # fmt: skip
    renamed: dict[str, dict[str, tuple[int, str]]] = {}

    def at(point: str) -> None:
        if point == "renamed":
            (version,) = (tmp_path / "data" / "test-run").glob("v*")
            renamed[version.name] = folder_state(version)

    monkeypatch.setattr(moaa.dataset.versions, "kill_point", at)
    summary = finish_run(plan, collect(plan), elapsed=1.0)
    version = Path(summary["version_path"])
    assert summary["report_path"] == str(version / "report.md")
    assert renamed == {"v1": folder_state(version)}  # not one file added, rewritten or touched since the rename
    files = read_manifest(version)["files"]
    assert files["report.md"] == {"sha256": sha256_file(version / "report.md"), "size": len(
        (version / "report.md").read_bytes())}  # fmt: skip
    assert {"report/calls.png", "report/lengths.png", "report/failures.png", "README.md"} <= set(files)
    assert verify_version(version) == []
