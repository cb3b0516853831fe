"""Versioned data sets: layout that `load_dataset` and TRL read, prompt-level split, immutability,
lineage, manifest hashes, secret scrubbing, the dataset card and the `moaa datasets` CLI.

Run: .venv/bin/python -m pytest tests/test_versions.py -x -q
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from moaa.cli import main
from moaa.dataset.versions import list_versions, resolve_version, split_of, verify_version
from moaa.errors import InputError, MoaaError
from tests.version_helpers import (
    CONFIG,
    N_PROMPTS,
    RUN_INFO,
    SEED,
    TEST_SIZE,
    _load,
    write_demo,
    write_parts,
)


@pytest.fixture
def version(tmp_path: Path):
    return write_demo(tmp_path / "data", write_parts(tmp_path / "parts"))


def _expected_test_ids(n: int = N_PROMPTS) -> set[str]:
    """The documented rule, re-implemented: sha256("<seed>:<prompt_id>") as a fraction < test_size."""
    ids = {f"p{i:03d}" for i in range(n)}
    frac = lambda pid: int.from_bytes(hashlib.sha256(f"{SEED}:{pid}".encode()).digest()[:8], "big") / 2**64  # noqa: E731
    return {pid for pid in ids if frac(pid) < TEST_SIZE}


def _tiny_chat_tokenizer():
    """A word-level tokenizer with a chat template, built offline (no Hub download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


@pytest.mark.slow
def test_every_config_and_split_loads_offline_and_trl_accepts_rows(version, tmp_path, monkeypatch):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    test_ids = _expected_test_ids()
    assert 0 < len(test_ids) < N_PROMPTS  # the fixture exercises both splits
    loaded = {
        cfg: _load(version.path, cfg, tmp_path / "cache", monkeypatch) for cfg in ("sft", "dpo", "trace", "failures")
    }
    for cfg in ("sft", "dpo", "trace"):
        assert set(loaded[cfg]) == {"train", "test"}
        assert set(loaded[cfg]["test"]["prompt_id"]) == test_ids  # same prompts held out in every config
        assert not set(loaded[cfg]["train"]["prompt_id"]) & test_ids
    assert loaded["sft"].num_rows == {"train": N_PROMPTS - len(test_ids), "test": len(test_ids)}
    assert loaded["trace"].num_rows == {"train": 2 * (N_PROMPTS - len(test_ids)), "test": 2 * len(test_ids)}
    assert set(loaded["failures"]) == {"train"} and loaded["failures"]["train"]["reason"] == ["aggregator_failed"] * 2

    sft = loaded["sft"]["train"][0]
    assert list(sft) == ["prompt_id", "messages", "source", "method", "models", "category", "verification", "reference"]
    assert is_conversational(sft) and sft["messages"][0] == {
        "role": "user",
        "content": f"Question {int(sft['prompt_id'][1:])}?",
    }
    first = min(f"p{i:03d}" for i in range(N_PROMPTS) if f"p{i:03d}" not in test_ids)
    dpo = loaded["dpo"]["train"][loaded["dpo"]["train"]["prompt_id"].index(first)]
    assert is_conversational(dpo) and dpo["chosen"][0]["role"] == "assistant"
    assert isinstance(dpo["score_chosen"], float)

    tok = _tiny_chat_tokenizer()
    n = int(dpo["prompt_id"][1:])
    assert maybe_apply_chat_template(dpo, tok) == {
        "prompt": f"<|user|>Question {n}?<|end|>\n<|assistant|>",
        "chosen": "word " * (n + 1) + "<|end|>\n",
        "rejected": "no<|end|>\n",
    }
    assert maybe_apply_chat_template(sft, tok)["text"].startswith("<|user|>Question")
    trace = loaded["trace"]["train"][0]
    assert json.loads(trace["meta"]) == {"why": "ok"} and trace["score"] in (None, 7.0)


def test_split_is_by_prompt_id_and_seeded():
    assert split_of("p001", 0.0, 0) == "train" and split_of("p001", 1.0, 0) == "test"
    ids = [f"id{i}" for i in range(2000)]
    share = sum(split_of(i, 0.2, 1) == "test" for i in ids) / len(ids)
    assert 0.17 < share < 0.23
    assert [split_of(i, 0.2, 1) for i in ids] != [split_of(i, 0.2, 2) for i in ids]  # the seed matters


def test_layout_shards_and_card_configs_match_files(tmp_path):
    from huggingface_hub import DatasetCard

    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"), max_shard_rows=8)
    assert (info.name, info.version, info.path) == ("demo", "v1", tmp_path / "data" / "demo" / "v1")
    n_test = len(_expected_test_ids())
    names = [
        f"{split}-{i:05d}-of-{shards:05d}"
        for split, n in (("train", N_PROMPTS - n_test), ("test", n_test))
        for shards in [-(-n // 8)]
        for i in range(shards)
    ]
    files = sorted((info.path / "data" / "sft").iterdir())
    # Hub-style shard names plus the first 12 hex of the file's sha256 (keeps load_dataset caches apart)
    assert [p.name.rsplit("-", 1)[0] for p in files] == sorted(names)
    assert all(p.name.rsplit("-", 1)[1] == hashlib.sha256(p.read_bytes()).hexdigest()[:12] + ".parquet" for p in files)
    assert len(names) > 2  # sharding happened
    card = DatasetCard.load(info.path / "README.md")
    assert card.data.license == "apache-2.0" and "demo" in card.data.tags
    configs = card.data.to_dict()["configs"]
    assert [c["config_name"] for c in configs] == ["sft", "dpo", "trace", "failures"]
    on_disk = {p.relative_to(info.path).as_posix() for p in (info.path / "data").rglob("*.parquet")}
    declared = set()
    for c in configs:
        for entry in c["data_files"]:
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            matched = {p.relative_to(info.path).as_posix() for path in paths for p in info.path.glob(path)}
            assert matched, f"{c['config_name']}/{entry['split']} matches no file"
            declared |= matched
    assert declared == on_disk
    assert [e["split"] for e in configs[3]["data_files"]] == ["train"]
    text = card.text
    for needle in ("42 fixture prompts answered with MoA", "| small | qwen-a | 120 |", "answer chars", "margin",
                   "aggregator_failed", 'load_dataset("', "trl sft", "--dataset_config dpo"):  # fmt: skip
        assert needle in text, needle


def test_absent_config_when_no_rows(tmp_path):
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts", dpo=False))
    assert not (info.path / "data" / "dpo").exists()
    manifest = json.loads((info.path / "moaa_manifest.json").read_text())
    assert list(manifest["counts"]["rows"]) == ["sft", "trace", "failures"]
    assert "config_name: dpo" not in (info.path / "README.md").read_text()


def test_two_runs_make_v1_v2_with_lineage_and_existing_version_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    parts = write_parts(Path("parts"))
    v1 = write_demo(Path("data"), parts)
    v2 = write_demo(Path("data"), parts)
    assert (v1.version, v2.version) == ("v1", "v2")
    assert Path("data/demo/LATEST").read_text() == "v2\n"
    manifest = json.loads((v2.path / "moaa_manifest.json").read_text())
    assert manifest["parent"] == "demo@v1" and manifest["version"] == "v2"
    assert json.loads((v1.path / "moaa_manifest.json").read_text())["parent"] is None
    before = {p: p.stat().st_mtime_ns for p in v1.path.rglob("*")}
    with pytest.raises(MoaaError, match=r"^data/demo/v1 already exists; versions are immutable"):
        write_demo(Path("data"), parts, version="v1")
    assert {p: p.stat().st_mtime_ns for p in v1.path.rglob("*")} == before
    assert sorted(p.name for p in Path("data/demo").iterdir()) == ["LATEST", "v1", "v2"]  # no temp folder left
    assert resolve_version(Path("data"), "demo") == Path("data/demo/v2")
    assert resolve_version(Path("data"), "demo@v1") == Path("data/demo/v1")
    with pytest.raises(InputError, match=r"demo@v9 does not exist under data; versions: v1, v2"):
        resolve_version(Path("data"), "demo@v9")
    listed = [
        (v["name"], v["version"], v["parent"], v["latest"], v["rows"]["failures"]) for v in list_versions(Path("data"))
    ]
    assert listed == [("demo", "v1", None, False, {"train": 2}), ("demo", "v2", "demo@v1", True, {"train": 2})]
    v3 = write_demo(Path("data"), parts, parent=None)
    assert json.loads((v3.path / "moaa_manifest.json").read_text())["parent"] is None

    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "VERSION", "CREATED", "PARENT", "ROWS", "(train/test)"]
    n_test = len(_expected_test_ids())
    assert out[2].split()[:2] == ["demo", "v2"] and "demo@v1" in out[2]
    assert f"sft {N_PROMPTS - n_test}/{n_test}" in out[2] and out[3].split()[1:3] == ["v3", "(latest)"]


def test_manifest_hashes_provenance_and_verify(version, tmp_path):
    manifest = json.loads((version.path / "moaa_manifest.json").read_text())
    files = {p.relative_to(version.path).as_posix() for p in version.path.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"moaa_manifest.json"}
    readme = version.path / "README.md"
    assert manifest["files"]["README.md"]["sha256"] == hashlib.sha256(readme.read_bytes()).hexdigest()
    assert manifest["packages"]["datasets"] and manifest["packages"]["trl"] and manifest["packages"]["polars"]
    assert manifest["endpoints"] == {"small": {"model": "qwen-a", "local": False}}
    assert manifest["prompt_source"] == {"label": "fixture.jsonl", "fingerprint": "f00d"}
    assert manifest["counts"]["failures"] == {"aggregator_failed": 2}  # as run_info said
    assert manifest["counts"]["failures_by_reason"] == {"aggregator_failed": 2}  # from the data
    assert manifest["split"]["test_size"] == TEST_SIZE and manifest["split"]["seed"] == SEED
    assert set(manifest["git"]) == {"commit", "dirty"} and manifest["moaa_version"]
    assert verify_version(version.path) == []

    shard = next((version.path / "data" / "dpo").glob("train-*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")
    (version.path / "notes.txt").write_text("hi")
    failures_file = next((version.path / "data" / "failures").glob("train-00000-of-00001-*.parquet"))
    failures_file.unlink()
    rel = shard.relative_to(version.path).as_posix()
    assert verify_version(version.path) == [
        f"modified: {rel} (sha256 differs from the manifest)",
        f"missing: data/failures/{failures_file.name}",
        "extra: notes.txt (not in the manifest)",
    ]


def test_verify_and_show_cli(version, capsys):
    root = str(version.path.parent.parent)
    assert main(["datasets", "verify", "demo@v1", "--root", root]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {version.path} (")
    assert main(["datasets", "show", "demo", "--root", root, "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# demo v1\n") and "42 fixture prompts" in out and "config_name" not in out
    assert "sft (first 2 rows):" in out and "failures (first 2 rows):" in out and '"prompt_id": "f1"' in out
    (version.path / "README.md").write_text("tampered")
    assert main(["datasets", "verify", "demo@v1", "--root", root]) == 1
    assert "modified: README.md" in capsys.readouterr().out
    assert main(["datasets", "verify", "nope@v1", "--root", root]) == 2
    assert "no data set named 'nope'" in capsys.readouterr().err


def test_secrets_are_scrubbed_from_every_file(tmp_path, monkeypatch, caplog):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("DEMO_API_KEY", secret)
    config = CONFIG | {"leaked": secret, "header": f"Bearer {secret}"}
    run_info = RUN_INFO | {"timings": {"note": secret}}
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"), config=config, run_info=run_info)
    for path in info.path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    manifest = json.loads((info.path / "moaa_manifest.json").read_text())
    assert manifest["config"]["leaked"] == "<redacted:DEMO_API_KEY>"
    assert manifest["config"]["header"] == "Bearer <redacted:DEMO_API_KEY>"
    assert manifest["config"]["endpoints"]["small"]["api_key_env"] == "DEMO_API_KEY"  # the name stays
    assert secret not in caplog.text and "config.leaked held the value of $DEMO_API_KEY" in caplog.text


def test_bad_rows_name_file_and_line_and_leave_no_version(tmp_path):
    parts = write_parts(tmp_path / "parts")
    bad = tmp_path / "parts" / "bad.jsonl"
    bad.write_text('{"prompt_id": "p1", "stage": "s", "reason": "r", "error": "e"}\n{"stage": "s"}\n')
    with pytest.raises(InputError, match=rf"^{bad}:2: every row needs a prompt_id$"):
        write_demo(tmp_path / "data", parts | {"failures": [bad]})
    wrong = tmp_path / "parts" / "wrong.jsonl"
    wrong.write_text('{"prompt_id": "p1", "prompt": [], "chosen": [], "rejected": [], "score_chosen": "high"}\n')
    with pytest.raises(InputError, match=rf"^{wrong}:1: a dpo row has a value of the wrong type"):
        write_demo(tmp_path / "data", parts | {"dpo": [wrong]})
    assert sorted(p.name for p in (tmp_path / "data" / "demo").iterdir()) == []
    with pytest.raises(MoaaError, match="unknown data set config"):
        write_demo(tmp_path / "data", {"rm": [bad]})


def test_pipeline_shaped_run_info_reaches_card_and_manifest(tmp_path):
    run_info = {k: v for k, v in RUN_INFO.items() if k != "summary_text"} | {
        "methods": {"sft": "moa", "scorer": "judge"},
        "counts": {"prompts": {"read": 42, "dropped": {"too_long": 2}}, "stages": {"sft": {"rows": 40}}},
        "summary": {"seconds": 12.5},
        "bias": {"position": 0.1},
    }
    info = write_demo(tmp_path / "data", write_parts(tmp_path / "parts"), run_info=run_info)
    card = (info.path / "README.md").read_text()
    assert "answered with sft: moa, scorer: judge by qwen-a, qwen-b: 40 SFT rows, 40 DPO pairs, 2 failed" in card
    assert "| prompts.dropped.too_long | 2 |" in card and "| stages.sft.rows | 40 |" in card
    manifest = json.loads((info.path / "moaa_manifest.json").read_text())
    assert manifest["run"] == {"summary": {"seconds": 12.5}, "bias": {"position": 0.1}}
    assert manifest["methods"] == {"sft": "moa", "scorer": "judge"}


def test_same_name_and_version_in_two_roots_load_their_own_rows(tmp_path):
    """datasets keys its cache on the folder name (`v1`) and the declared files: moaa's content-hashed
    file names keep two `demo/v1` folders from answering with each other's rows."""
    from datasets import load_dataset

    small = write_demo(tmp_path / "a", write_parts(tmp_path / "pa", n=10), test_size=0.0)
    large = write_demo(tmp_path / "b", write_parts(tmp_path / "pb", n=30), test_size=0.0)
    assert small.path.name == large.path.name == "v1"
    assert len(load_dataset(str(small.path), "sft")["train"]) == 10
    assert len(load_dataset(str(large.path), "sft")["train"]) == 30
    assert len(load_dataset(str(small.path), "sft")["train"]) == 10


def test_a_kill_between_rename_and_latest_loses_nothing_and_leftovers_are_cleaned(tmp_path):
    """LATEST one behind the newest folder (a SIGKILL after the rename) and a killed write's temp
    folder: the newest folder is the latest, and the next write takes the next number and cleans up."""
    parts = write_parts(tmp_path / "parts")
    data = tmp_path / "data"
    write_demo(data, parts)
    write_demo(data, parts)
    (data / "demo" / "LATEST").write_text("v1\n")  # as a kill between os.rename and _point_latest leaves it
    (data / "demo" / ".tmp-v3-deadbeef" / "data").mkdir(parents=True)
    (data / "demo" / ".LATEST.cafe0123").write_text("v3\n")
    assert resolve_version(data, "demo") == data / "demo" / "v2"
    v3 = write_demo(data, parts)
    assert v3.version == "v3"
    assert (data / "demo" / "LATEST").read_text() == "v3\n"
    assert sorted(p.name for p in (data / "demo").iterdir()) == ["LATEST", "v1", "v2", "v3"]


def test_a_prompt_written_twice_to_the_work_folder_is_once_in_the_version(tmp_path):
    """Two attempts that appended the same prompts to one shard: each prompt once, with one copy of its trace."""
    parts = write_parts(tmp_path / "parts", n=4, dpo=True)
    for config in ("sft", "dpo", "trace", "failures"):
        for path in parts[config]:
            path.write_text(path.read_text() * 2)  # the whole file again, as a second writer would
    info = write_demo(tmp_path / "data", parts)
    rows = {cfg: [r for f in sorted((info.path / "data" / cfg).glob("*.parquet"))
                  for r in pq.read_table(f).to_pylist()] for cfg in ("sft", "dpo", "trace", "failures")}  # fmt: skip
    assert sorted(r["prompt_id"] for r in rows["sft"]) == ["p000", "p001", "p002", "p003"]
    assert sorted(r["prompt_id"] for r in rows["dpo"]) == ["p000", "p001", "p002", "p003"]
    assert sorted((r["prompt_id"], r["kind"]) for r in rows["trace"]) == sorted(
        (f"p{i:03d}", kind) for i in range(4) for kind in ("proposal", "verdict")
    )
    assert sorted(r["prompt_id"] for r in rows["failures"]) == ["f1", "f2"]
    manifest = json.loads((info.path / "moaa_manifest.json").read_text())
    assert sum(manifest["counts"]["rows"]["sft"].values()) == 4
