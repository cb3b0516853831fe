"""The Python API: moaa.run / load_config / Version / versions, and the README's notebook-style script
run as written against the test server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import moaa
from moaa.errors import ConfigError
from moaa.testing.openai_server import OpenAITestServer
from tests.conftest import ROOT, base_raw
from tests.pipeline_helpers import cli_env
from tests.version_helpers import write_demo, write_parts


def test_import_moaa_is_light_and_lists_its_stable_names():
    code = (
        "import sys, moaa; print(sorted(m for m in ('pydantic', 'prefect', 'datasets', 'polars', 'moaa.api') "
        "if m in sys.modules)); print(moaa.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.splitlines()[0] == "[]"
    assert {"run", "load_config", "Version", "versions", "compare", "MoaaError"} <= set(eval(out.splitlines()[1]))
    assert all(getattr(moaa, name).__doc__ for name in ("run", "load_config", "Version", "versions", "compare"))


def test_load_config_takes_keyword_overrides_as_the_yaml_nests_them(tmp_path):
    path = ROOT / "configs" / "moa-lite.yaml"
    config = moaa.load_config(path, prompts={"limit": 20}, sft={"proposers": [{"endpoint": "kimi-k2"}]})
    assert config.prompts.limit == 20 and [p.endpoint for p in config.sft.proposers] == ["kimi-k2"]
    assert moaa.load_config(path, "sft.aggregator.temperature=0.3").sft.aggregator.temperature == 0.3
    assert moaa.load_config(base_raw(tmp_path), run={"shard_size": 7}).run.shard_size == 7
    with pytest.raises(ConfigError, match=r"unknown key 'prompts.limt'"):
        moaa.load_config(path, prompts={"limt": 3})


def test_a_version_as_datasets_frames_card_manifest_verify_and_publish_dry_run(tmp_path):
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"))
    v = moaa.Version.open("demo", root=tmp_path / "data")
    assert (v.ref, v.path) == ("demo@v1", info.path)
    assert {split: len(ds) for split, ds in v.sft.items()} == v.rows["sft"]
    assert v.sft["train"][0]["messages"][0]["role"] == "user" and set(v.dpo) == set(v.rows["dpo"])
    frame = v.frame("sft")
    assert frame.height == sum(v.rows["sft"].values()) and set(frame["split"]) == set(v.rows["sft"])
    assert v.frame("dpo", "train").height == v.rows["dpo"]["train"]
    assert v.card.startswith("---\n") and v.manifest["counts"]["rows"] == v.rows and v.verify() == []
    assert repr(v).startswith("Version('demo@v1', sft=")
    published = v.publish("org/demo", dry_run=True)
    assert (published.repo_id, published.tag, published.dry_run) == ("org/demo", "v1", True)
    (v.path / "README.md").write_text("edited")
    assert v.verify() == ["modified: README.md (sha256 differs from the manifest)"]
    assert [w.ref for w in moaa.versions(tmp_path / "data")] == ["demo@v1"]


def test_a_config_without_failures_reads_an_empty_failures_dataset(tmp_path):
    parts = write_parts(tmp_path / "parts")
    parts.pop("failures")
    v = moaa.Version(write_demo(tmp_path / "data", parts).path)
    assert "failures" not in v.rows and dict(v.failures) == {}
    assert v.frame("failures").columns == ["prompt_id", "stage", "reason", "error", "transient", "split"]


def readme_script() -> str:
    """The README's notebook-style example (the Python block under 'Python API')."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readmes_notebook_script_runs_as_written_against_the_test_server(tmp_path):
    """The script as the README prints it, in a fresh interpreter, in a copy of the project whose
    Together presets point at the test server: 20 prompts of MoA-Lite, a Version, its SFT rows."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    script = readme_script()
    assert 'v = moaa.run("configs/moa-lite.yaml", prompts={"limit": 20})' in script
    with OpenAITestServer() as srv:
        together = tmp_path / "configs" / "together.yaml"
        together.write_text(together.read_text().replace("https://api.together.ai/v1", srv.base_url))
        env = cli_env(TOGETHER_API_KEY="test-key", PREFECT_HOME=str(tmp_path / "prefect"))
        env.pop("PREFECT_API_URL", None)
        counts = "json.dumps({k: len(d) for k, d in v.sft.items()}, separators=(',', ':'))"
        failed = "json.dumps(sorted(v.frame('failures')['reason'].to_list()), separators=(',', ':'))"
        code = f"{script}\nprint('ROWS', {counts}, v.ref, v.summary['calls'], {failed})"
        done = subprocess.run(
            [sys.executable, "-c", "import json\n" + code], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        asked = [r for r in srv.requests if r["path"] == "/v1/chat/completions"]
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("ROWS "))
    _, counts, ref, calls, failed = line.split(" ", 4)
    # default.jsonl's checkable prompts get the test server's filler, which fails their checks: named
    # failures, never rows; every other prompt is a row
    reasons = json.loads(failed)
    assert sum(json.loads(counts).values()) + len(reasons) == 20 and set(reasons) <= {"unverified"}
    assert ref == "moa-lite-together@v1" and 0 < len(reasons) < 20
    # 4 proposers + the aggregator per prompt, and one re-ask of each aggregate that failed its check
    assert int(calls) == len(asked) == 20 * 5 + len(reasons)
    assert os.path.isdir(tmp_path / "data" / "moa-lite-together" / "v1")
