"""SFT and DPO runs on a tiny random model and a data set version written by moaa itself: run folder,
model card naming the data set version, lineage, settings validation, adapters chaining SFT -> DPO.

Run: .venv/bin/python -m pytest tests/test_train.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_tiny_causal_lm

from moaa.dataset.versions import write_version
from moaa.errors import ConfigError, InputError
from moaa.train.data import find_dataset, held_out_prompts, load_rows
from moaa.train.runs import latest_run, read_lineage
from moaa.train.settings import load_settings

N_PROMPTS = 24
TEST_SIZE = 0.25
TINY_SETTINGS = [
    "max_steps=2", "per_device_train_batch_size=2", "max_length=64", "learning_rate=1e-3",
    "lora_target_modules=[q_proj,v_proj]", "lora_r=4", "lora_alpha=8",
]  # fmt: skip


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_demo_version(root: Path, name: str = "demo", n: int = N_PROMPTS, dpo: bool = True) -> Path:
    """A data set version with sft and dpo configs over `n` prompts, written by moaa.dataset.versions."""
    parts_dir = root.parent / f"{name}-parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    sft, pairs = [], []
    for i in range(n):
        user = {"role": "user", "content": f"What is {i} plus {i}?"}
        answer = {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}
        sft.append({"prompt_id": f"p{i:03d}", "messages": [user, answer], "source": "test", "method": "moa",
                    "models": ["m"], "category": "math"})  # fmt: skip
        pairs.append({"prompt_id": f"p{i:03d}", "prompt": [user], "chosen": [answer],
                      "rejected": [{"role": "assistant", "content": "I do not know."}], "score_chosen": 4.0,
                      "score_rejected": 1.0, "chosen_model": "m", "rejected_model": "m"})  # fmt: skip
    parts = {"sft": [_jsonl(parts_dir / "sft.jsonl", sft)]}
    if dpo:
        parts["dpo"] = [_jsonl(parts_dir / "dpo.jsonl", pairs)]
    info = write_version(root, name, parts, config={"name": name}, run_info={}, test_size=TEST_SIZE, split_seed=0,
                         license="apache-2.0", tags=["test"])  # fmt: skip
    return info.path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_demo_version(root)
    return root


def test_find_dataset_defaults_to_newest_and_reads_train_only(tmp_path: Path):
    root = tmp_path / "data"
    write_demo_version(root, "older")
    v1 = write_demo_version(root, "newer")
    write_demo_version(root, "newer", n=8)  # newer@v2, written last
    found = find_dataset(None, root)
    assert (found.name, found.version) == ("newer", "v2")
    assert find_dataset("newer@v1", root).path == v1
    assert find_dataset(str(v1), root).ref == "newer@v1"
    assert len(find_dataset("older", root).manifest_sha256) == 64
    train = load_rows(find_dataset("older", root), "sft", "train")
    held_out = held_out_prompts(find_dataset("older", root))
    assert train.column_names == ["messages"]
    train_questions = {row["messages"][0]["content"] for row in train}
    assert len(train) + len(held_out) == N_PROMPTS and held_out
    assert not train_questions & {p["messages"][0]["content"] for p in held_out}
    assert all(p["messages"][-1]["role"] == "user" for p in held_out)


def test_missing_data_and_dpo_config_are_one_line_errors(tmp_path: Path):
    with pytest.raises(InputError, match="no data set version under .*; run `make data` first"):
        find_dataset(None, tmp_path / "nothing")
    root = tmp_path / "data"
    write_demo_version(root, "nodpo", dpo=False)
    with pytest.raises(InputError, match=r"no data set version under .* with dpo/train rows; enable the preference"):
        find_dataset(None, root, config="dpo")
    with pytest.raises(InputError, match="has no dpo/train rows; enable the preference stage"):
        load_rows(find_dataset("nodpo", root), "dpo", "train")


def test_settings_use_trl_field_names_and_reject_unknown_keys(tmp_path: Path):
    settings = load_settings("sft", "configs/train/sft.yaml", ["max_steps=7", "lora_r=4"])
    assert settings.trainer["max_steps"] == 7 and settings.model["lora_r"] == 4
    assert settings.trainer["max_length"] == 512 and settings.model["use_peft"] is True
    assert load_settings("dpo", "configs/train/dpo.yaml").trainer["beta"] == 0.1
    with pytest.raises(ConfigError, match="unknown key 'max_step' .*did you mean 'max_steps'"):
        load_settings("sft", "configs/train/sft.yaml", ["max_step=3"])
    with pytest.raises(ConfigError, match="unknown key 'beta'"):
        load_settings("sft", None, ["beta=0.1"])  # a DPOConfig field, not an SFTConfig one
    with pytest.raises(ConfigError, match="'output_dir' is set by moaa"):
        load_settings("sft", None, ["output_dir=x"])


def test_sft_then_dpo_on_a_tiny_model(tiny_lm: Path, data_root: Path, tmp_path: Path):
    import torch
    from safetensors.torch import load_file

    from moaa.models.student import load_model, save_merged
    from moaa.train.dpo import run_dpo
    from moaa.train.sft import run_sft

    runs = tmp_path / "runs"
    sft = run_sft(model=str(tiny_lm), overrides=TINY_SETTINGS, data_root=data_root, runs_root=runs)
    dataset = find_dataset("demo", data_root)
    assert sft.output.parent == runs / "sft" and sft.output.name.startswith("demo-v1-")
    assert sft.metrics["global_step"] == 2 and sft.metrics["train_loss"] > 0
    assert [row["step"] for row in sft.log_history if "loss" in row] == [1, 2]
    assert (sft.output / "adapter_config.json").is_file() and (sft.output / "tokenizer.json").is_file()
    adapter = json.loads((sft.output / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm.resolve()) and adapter["r"] == 4
    card = (sft.output / "README.md").read_text()
    assert "demo@v1" in card and dataset.manifest_sha256 in card and str(tiny_lm.resolve()) in card
    assert "SFTTrainer" in card and "max_steps: 2" in card and "| step | loss" in card
    lineage = read_lineage(sft.output)
    assert [p["kind"] for p in lineage["parents"]] == ["dataset", "model"]
    assert lineage["parents"][0] == dataset.to_dict()
    assert latest_run("sft", runs) == sft.output

    dpo = run_dpo(overrides=TINY_SETTINGS, data_root=data_root, runs_root=runs)  # starts from the SFT run
    assert dpo.base["ref"] == str(sft.output.resolve()) and dpo.base["adapter"] is True
    assert dpo.metrics["global_step"] == 2
    assert "rewards/margins" in dpo.log_history[0]
    dpo_adapter = json.loads((dpo.output / "adapter_config.json").read_text())
    assert dpo_adapter["base_model_name_or_path"] == str(sft.output.resolve())
    assert "DPOTrainer" in (dpo.output / "README.md").read_text()

    # Loading the DPO adapter rebuilds base + SFT + DPO: it differs from base+SFT by the DPO update only.
    base, after_sft, after_dpo = (load_model(str(p)) for p in (tiny_lm, sft.output, dpo.output))
    key = "model.layers.0.self_attn.q_proj.weight"
    w0, w1, w2 = (m.state_dict()[key] for m in (base, after_sft, after_dpo))
    assert not torch.equal(w0, w1) and not torch.equal(w1, w2)
    lora = load_file(str(dpo.output / "adapter_model.safetensors"))
    a = next(v for k, v in lora.items() if "layers.0.self_attn.q_proj.lora_A" in k)
    b = next(v for k, v in lora.items() if "layers.0.self_attn.q_proj.lora_B" in k)
    torch.testing.assert_close(w2 - w1, (b @ a) * (8 / 4), atol=1e-5, rtol=1e-4)
    merged = save_merged(str(dpo.output), tmp_path / "merged")  # one plain folder for vLLM and friends
    assert not (merged / "adapter_config.json").exists()
    torch.testing.assert_close(load_model(str(merged)).state_dict()[key], w2)


def test_full_fine_tuning_saves_plain_weights(tiny_lm: Path, data_root: Path, tmp_path: Path):
    from moaa.train.sft import run_sft

    out = tmp_path / "full"
    result = run_sft(model=str(tiny_lm), overrides=[*TINY_SETTINGS, "use_peft=false", "max_steps=1"],
                     data_root=data_root, output=out)  # fmt: skip
    assert result.output == out and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    assert "library_name: transformers" in (out / "README.md").read_text()
    with pytest.raises(InputError, match="already exists and is not empty"):
        run_sft(model=str(tiny_lm), overrides=TINY_SETTINGS, data_root=data_root, output=out)
