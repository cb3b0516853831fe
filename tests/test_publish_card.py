"""What reaches the Hub reads right there: a private repo, a card written for it (load snippet,
bias section, metadata the Hub accepts), and no path or private URL of the producer's machine.

Run: .venv/bin/python -m pytest tests/test_publish_card.py -q
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from test_publish import TOKEN, hub  # noqa: F401 - the stub fixture

from moaa.cli import main
from moaa.dataset.hub import publish_version
from moaa.errors import InputError
from tests.version_helpers import CONFIG, RUN_INFO, _jsonl, write_demo, write_parts

REPO = Path(__file__).resolve().parents[1]
BIAS = {"rows": 24, "prompts": 26, "length_ratio_mean": 1.8, "length_ratio_median": 1.5, "chosen_longer_share": 0.75,
        "score_length_pearson": 0.42, "scored_candidates": 96, "pairs_judged": 30, "swap_disagreements": 6,
        "swap_disagreement_rate": 0.2, "dropped": {"tie": 2}, "tie_drop_share": 0.077}  # fmt: skip


def _local_run(tmp_path: Path) -> tuple[dict, dict, dict]:
    """Parts, config and run info as a run on this machine records them: absolute folders, private URLs."""
    student = tmp_path / "runs" / "dpo" / "student-7"
    parts = write_parts(tmp_path / "parts")
    pairs = [json.loads(line) for line in parts["dpo"][0].read_text().splitlines()]
    for row in pairs:
        row["chosen_model"], row["rejected_model"] = str(student), "qwen-b"
    parts["dpo"] = [_jsonl(tmp_path / "parts" / "dpo-local.jsonl", pairs)]
    config = CONFIG | {
        "endpoints": {
            "small": {"model": "qwen-a", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "DEMO_API_KEY"},
            "student": {"model": str(student), "backend": "transformers"},
        },
        "prompts": {"path": str(tmp_path / "prompts.jsonl")},
        "run": {"work_dir": str(tmp_path / "work")},
        "cache": {"path": str(Path.home() / ".cache" / "moaa-test.sqlite")},
    }
    summary = {"work_dir": str(tmp_path / "work" / "demo"), "this_run": {"calls": 0, "cache_hits": 124, "cost": 0.0}}
    stats = {"small": RUN_INFO["stats"]["small"] | {"cost": 0.0, "cached_cost": 0.25, "truncated": 3, "empty": 1}}
    run_info = RUN_INFO | {"stats": stats, "bias": BIAS, "summary": summary}
    run_info["prompt_source"] = {"label": str(tmp_path / "prompts.jsonl"), "fingerprint": "f00d"}
    return parts, config, run_info


def _text_of(name: str, data: bytes) -> str:
    """A published file as text: parquet rows as JSON, other files decoded."""
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
    return data.decode("utf-8", errors="replace")


def test_published_version_reads_right_on_the_hub(hub, tmp_path, monkeypatch):  # noqa: F811
    import huggingface_hub
    from huggingface_hub import DatasetCard

    parts, config, run_info = _local_run(tmp_path)
    version = write_demo(tmp_path / "data", parts, config=config, run_info=run_info)
    result = publish_version(version.path, "org/demo", None, TOKEN, endpoint=hub.url)  # visibility from the run

    repo = hub.repos["datasets/org/demo"]
    assert result.private is True and repo.private is True
    cache = tmp_path / "hf-cache"
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"  # downloads from the stub too
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    card_path = huggingface_hub.hf_hub_download(
        "org/demo", "README.md", repo_type="dataset", revision="v1", endpoint=hub.url, token=TOKEN, cache_dir=cache
    )
    text = Path(card_path).read_text()
    assert 'ds = load_dataset("org/demo", "sft", revision="v1")' in text
    assert str(version.path) not in text and 'load_dataset("' + str(tmp_path) not in text
    assert "## Bias report" in text and "| position-swap disagreement (counted as ties) | 0.2 |" in text
    assert "| chosen / rejected length, mean | 1.8 |" in text
    assert "Cost to make: $0.2500" in text and "This run spent: $0.0000 on 0 calls sent; 124 answers" in text
    assert "## Quality" in text and "| small | 3 | 1 | 0 |" in text

    card = DatasetCard(text)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    card.validate("dataset")  # the stub applies the Hub's metadata rules (tests/hub_rules.py)
    data = card.data
    assert (data.license, data.language, data.task_categories) == ("apache-2.0", ["en"], ["text-generation"])
    assert {"sft", "dpo", "synthetic"} <= set(data.tags) and data.pretty_name == "demo v1"
    assert data.size_categories == ["n<1K"]
    assert data.generating_models == ["qwen-a", "qwen-b"]
    sft_files = {
        f["split"]: f["path"] for f in next(c for c in data.configs if c["config_name"] == "sft")["data_files"]
    }
    assert sft_files["train"] == sorted(p for p in repo.files if p.startswith("data/sft/train-"))

    published = repo.commits[-1].tree
    manifest = json.loads(published["moaa_manifest.json"])
    assert manifest["files"]["README.md"]["sha256"] == __import__("hashlib").sha256(published["README.md"]).hexdigest()
    assert manifest["card"]["rendered_for"] == "org/demo"
    assert manifest["config"]["endpoints"]["small"]["base_url"] == "<private-url>"
    assert manifest["endpoints"]["student"]["model"] == "student-7"
    dpo = json.loads(_text_of("d.parquet", published[next(p for p in published if p.startswith("data/dpo/"))]))
    assert {r["chosen_model"] for r in dpo} == {"student-7"}

    machine = {str(tmp_path), str(Path.home()), str(REPO), sys.prefix, str(tmp_path.resolve())}
    for name, data_bytes in published.items():
        content = _text_of(name, data_bytes)
        leaks = [p for p in machine if p in content]
        assert not leaks, f"{name} holds {leaks}"
        assert "127.0.0.1" not in content, name


def test_publish_refuses_a_version_that_would_leak_a_machine_path(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    parts = write_parts(tmp_path / "parts")
    rows = [json.loads(line) for line in parts["sft"][0].read_text().splitlines()]
    rows[0]["messages"][0]["content"] = f"Summarise {Path.home() / 'notes' / 'plan.txt'} for me."
    parts["sft"][0] = _jsonl(tmp_path / "parts" / "sft-leak.jsonl", rows)
    version = write_demo(tmp_path / "data", parts)
    with pytest.raises(InputError, match=r"data/sft/.*\.parquet holds .*, a path or private URL of this machine"):
        publish_version(version.path, "org/demo", True, TOKEN, endpoint=hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code = main(["publish", "demo@v1", "--repo-id", "org/demo", "--dry-run", "--root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "write a new version" in err and "Traceback" not in err
    assert hub.repos == {}
