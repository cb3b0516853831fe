"""The student model: which weights a name means, and loading them for training or generation.

A model reference is one of
- nothing, or `local`: the embedded local model (Qwen2.5-Coder-0.5B-Instruct), whose GGUF
  `moaa.local.model.ensure_local_hf_model()` de-quantises once into a plain fp32 folder;
- a folder with full weights (`config.json`), e.g. a full fine-tuning run;
- a LoRA adapter folder (`adapter_config.json`): its base is loaded (recursively, so a DPO
  adapter on top of an SFT adapter works) and the adapter merged in;
- a `.gguf` file: loaded by transformers de-quantised, with the GGUF quantizer marker dropped
  so that it can train and be saved;
- a Hugging Face Hub id (needs network access or the Hub cache).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from moaa.errors import InputError

log = logging.getLogger(__name__)

LOCAL_ALIASES = ("local", "local-student")
ADAPTER_CONFIG = "adapter_config.json"


def resolve_model(ref: str | Path | None) -> str:
    """The path or hub id to load for `ref` (the converted local model when it is empty or 'local')."""
    from moaa.local.model import LOCAL_MODEL_NAME, ensure_local_hf_model

    if ref is None or str(ref).strip() in ("", *LOCAL_ALIASES, LOCAL_MODEL_NAME):
        return str(ensure_local_hf_model())
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise InputError(f"{path}: neither a model folder (config.json) nor a LoRA adapter (adapter_config.json)")
        return str(path.resolve())
    if text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1:
        raise InputError(f"model {text!r} does not exist; pass a model folder, a .gguf file or a Hub id")
    return text  # a Hub id


def is_adapter(ref: str) -> bool:
    return (Path(ref) / ADAPTER_CONFIG).is_file()


def adapter_base(ref: str) -> str:
    """The base model an adapter folder was trained on (as recorded in adapter_config.json)."""
    config = json.loads((Path(ref) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise InputError(f"{ref}/{ADAPTER_CONFIG} names no base_model_name_or_path; cannot load the adapter")
    return base


def describe_model(ref: str) -> dict[str, Any]:
    """{kind: 'model', ref, path, adapter, base} for lineage and model cards."""
    out: dict[str, Any] = {"kind": "model", "ref": ref, "adapter": is_adapter(ref)}
    if Path(ref).exists():
        out["path"] = str(Path(ref).resolve())
    if out["adapter"]:
        out["base"] = adapter_base(ref)
    return out


def drop_gguf_marker(model: Any) -> Any:
    """Forget that `model` was loaded from a GGUF: its weights are dense already, but the GGUF
    quantizer left on it makes Trainer refuse to train it and save_pretrained refuse to save it."""
    model.hf_quantizer = None
    for config in {id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values():
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    return model


def load_tokenizer(ref: str) -> Any:
    """The tokenizer of `ref` (an adapter folder's own, else its base's), with a pad token."""
    from transformers import AutoTokenizer

    source, kwargs = ref, {}
    if ref.endswith(".gguf"):
        source, kwargs = str(Path(ref).parent), {"gguf_file": Path(ref).name}
    elif is_adapter(ref) and not (Path(ref) / "tokenizer_config.json").is_file():
        return load_tokenizer(resolve_model(adapter_base(ref)))
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        log.warning("%s has no chat template; TRL will add a ChatML one for training", ref)
    return tokenizer


def load_model(ref: str, dtype: Any = None) -> Any:
    """A plain causal LM for `ref` (resolved); adapters merged into their base, GGUF de-quantised."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if is_adapter(ref):
        from peft import PeftModel

        base = load_model(resolve_model(adapter_base(ref)), dtype)
        log.info("merging adapter %s", ref)
        return PeftModel.from_pretrained(base, ref).merge_and_unload()
    if ref.endswith(".gguf"):
        from transformers import GgufConfig

        log.info("loading %s de-quantised", ref)
        model = AutoModelForCausalLM.from_pretrained(
            str(Path(ref).parent), gguf_file=Path(ref).name, dtype=dtype,
            quantization_config=GgufConfig(dequantize=True),
        )  # fmt: skip
        return drop_gguf_marker(model)
    return AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)


def pin_adapter_base(adapter_dir: Path, base: str) -> None:
    """Record `base` (the model the adapter was trained on) in the saved adapter_config.json.

    peft writes the name the weights were first loaded from, which is wrong for an adapter trained
    on a merged model (DPO on an SFT adapter): loading it would skip the SFT weights."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_merged(ref: str, out_dir: Path) -> Path:
    """Write `ref` as one plain model folder (adapters merged), for servers such as vLLM."""
    model, tokenizer = load_model(ref), load_tokenizer(ref)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
