"""`output.review: required` through the real pipeline: the run writes its version but publishes nothing,
the version cannot be published by hand, and `moaa review apply` publishes the reviewed version to
the repo the run named (against the local Hub stand-in, tests/hub_stub.py).

Run: .venv/bin/python -m pytest tests/test_review_gate.py -x -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_publish import TOKEN, hub  # noqa: F401 - the local Hub fixture
from view_helpers import responder, run_view_pipeline

from moaa.cli import main
from moaa.dataset.manifest import read_manifest
from moaa.testing.openai_server import OpenAITestServer
from moaa.view.decisions import ReviewLog
from moaa.work.summary import format_summary
from tests.conftest import make_config

pytestmark = pytest.mark.slow


def test_review_required_publishes_only_the_reviewed_version(tmp_path, prefect_harness, hub, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with OpenAITestServer(responder=responder) as server:
        config = make_config(tmp_path, server.base_url, "prompts.limit=4", "name=gated", "output.review=required",
                             "output.publish_repo_id=org/gated")  # fmt: skip
        summary = run_view_pipeline(config)
    v1 = Path(summary["version_path"])
    assert "published" not in summary and hub.repos == {}  # nothing left the machine
    assert summary["publish_held"] == "not published: gated@v1 awaits review (output.review: required)"
    assert ("  review: not published: gated@v1 awaits review (output.review: required); `moaa view gated@v1`, then "
            "`moaa review apply gated@v1` publishes it") in format_summary(summary).splitlines()  # fmt: skip
    assert read_manifest(v1)["run"]["publish_held"] == {"repo_id": "org/gated"}

    root = str(v1.parent.parent)
    assert main(["publish", "gated@v1", "--repo-id", "org/gated", "--root", root]) == 2
    assert "error: gated@v1 awaits review (its run set output.review: required)" in capsys.readouterr().err
    assert hub.repos == {}

    rejected = read_manifest(v1)["counts"]["rows"]
    ReviewLog.of(v1).record("sft", _first_id(v1), "reject", note="not good enough")
    assert main(["review", "apply", "gated@v1", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "wrote gated@v2" in out and "published to org/gated, tagged v2" in out
    repo = hub.repos["datasets/org/gated"]
    assert list(repo.tags) == ["v2"] and "review.jsonl" in repo.commits[0].files
    assert sum(read_manifest(v1.parent / "v2")["counts"]["rows"]["sft"].values()) == sum(rejected["sft"].values()) - 1


def _first_id(version: Path) -> str:
    from moaa.view.paging import Query, config_table, read_page

    return read_page(config_table(version, "sft"), Query()).rows[0]["prompt_id"]
