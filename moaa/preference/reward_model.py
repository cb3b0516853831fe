"""A sequence-classification reward model behind the Scorer interface (ALGORITHMS.md section 7).

The model reads the chat-templated conversation (prompt + candidate as the assistant turn) and
gives one number: ArmoRM-style models expose it as `output.score`, Skywork-style ones as the single
logit. Tokenizers without a chat template get a plain `User: ... / Assistant: ...` format. Loading
happens once per process and path (in a worker thread, so the event loop keeps serving judges),
inference runs in batches of `batch_size`, one batch at a time per model. Inputs longer than the
model's context are cut from the left, keeping the end of the answer that the score reads.

A checkpoint is refused, with its name, rather than scored at random: one whose config maps
AutoModelForSequenceClassification to its own code (ArmoRM) unless `trust_remote_code` allows
running that code (else transformers would build a stock class with a fresh head); one whose
weights lack part of the model (a head initialised at load: transformers' missing_keys); one
whose output has neither a `score` nor a single logit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any

from moaa.errors import ConfigError
from moaa.models.client import Message
from moaa.preference.candidates import Candidate, conversation_of
from moaa.preference.score_details import ScoreDetail
from moaa.preference.scoring import Score
from moaa.rows import Prompt

log = logging.getLogger(__name__)

_LOADED: dict[tuple[str, str, bool], tuple[Any, Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()
_MAX_TOKENS = 8192  # upper bound when neither tokenizer nor model states a context length


def load_reward_model(
    path: str, device: str = "cpu", trust_remote_code: bool = False
) -> tuple[Any, Any, threading.Lock]:
    """(model, tokenizer, lock) for `path` on `device`, loaded once per process."""
    key = (path, device, trust_remote_code)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = (*_load(path, device, trust_remote_code), threading.Lock())
        return _LOADED[key]


def _load(path: str, device: str, trust_remote_code: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"preference.scorer.device: '{device}' but torch sees no GPU; set it to cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        _check_custom_code(path, config, trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if trust_remote_code else " (a model with its own code needs preference.scorer.trust_remote_code)"
        raise ConfigError(
            f"preference.scorer.reward_model: cannot load '{path}' as a sequence classifier ({first}); "
            f"give a local folder or hub id of one{hint}"
        ) from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ConfigError(
            f"preference.scorer.reward_model: '{path}' has no weights for {shown}: transformers initialised "
            "them at random, so its scores would mean nothing; give a checkpoint trained as a reward model "
            "(with its head)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # needed to find each row's last token
    tokenizer.truncation_side = "left"
    model.to(device).eval()
    log.info("reward model %s loaded on %s (%s)", path, device, dtype)
    return model, tokenizer


def _check_custom_code(path: str, config: Any, trust_remote_code: bool) -> None:
    """Refuse a checkpoint whose sequence classifier is its own code unless running it is allowed."""
    mapped = (getattr(config, "auto_map", None) or {}).get("AutoModelForSequenceClassification")
    if mapped and not trust_remote_code:
        raise ConfigError(
            f"preference.scorer.reward_model: '{path}' defines its own model class ({mapped}); set "
            "preference.scorer.trust_remote_code: true to run the code that ships with it (only for a "
            "checkpoint you trust), else transformers would score with a stock class and a random head"
        )


def format_conversation(tokenizer: Any, messages: list[Message]) -> tuple[str, bool]:
    """(text, templated): the chat template's rendering, or a plain format when there is none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False), True
    return "\n\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in messages), False


def context_length(model: Any, tokenizer: Any) -> int:
    limits = [_MAX_TOKENS, getattr(tokenizer, "model_max_length", _MAX_TOKENS) or _MAX_TOKENS]
    if getattr(model.config, "max_position_embeddings", None):
        limits.append(model.config.max_position_embeddings)
    return int(min(limits))


def score_texts(model: Any, tokenizer: Any, texts: list[str], batch_size: int, templated: bool) -> list[float | None]:
    """One reward per text (None for a non-finite one), `batch_size` texts per forward pass."""
    import torch

    values: list[float | None] = []
    max_length = context_length(model, tokenizer)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            add_special_tokens=not templated,
            return_tensors="pt",
        ).to(model.device)
        with torch.inference_mode():
            out = model(**batch)
        column = reward_column(out, model)
        values += [v if math.isfinite(v) else None for v in column]
    return values


def reward_column(out: Any, model: Any) -> list[float]:
    """One reward per row: ArmoRM-style `output.score`, else the single logit (several: an error)."""
    raw = getattr(out, "score", None)
    if raw is None:
        raw = out.logits
        if raw.shape[-1] != 1:
            name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            raise ConfigError(
                f"preference.scorer.reward_model: '{name}' gives {raw.shape[-1]} logits and no `score`; a "
                "reward model gives one number per answer (a classifier of labels is not one)"
            )
    return raw.float().reshape(raw.shape[0], -1)[:, 0].cpu().tolist()


class RewardModelScorer:
    kind = "reward_model"

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 8, trust_remote_code: bool = False):
        self.path, self.device, self.batch_size = path, device, batch_size
        self.trust_remote_code = trust_remote_code
        self.label = path

    async def score(self, prompt: Prompt, candidates: list[Candidate]) -> list[Score]:
        model, tokenizer, lock = await asyncio.to_thread(
            load_reward_model, self.path, self.device, self.trust_remote_code
        )
        convo = conversation_of(prompt.messages)
        rendered = [
            format_conversation(tokenizer, [*convo, {"role": "assistant", "content": c.text}]) for c in candidates
        ]
        templated = rendered[0][1] if rendered else True

        def run() -> list[float | None]:
            with lock:  # one forward pass at a time per model
                return score_texts(model, tokenizer, [text for text, _ in rendered], self.batch_size, templated)

        values = await asyncio.to_thread(run)
        return [Score(v, "", ScoreDetail(reward_model=self.path, templated=templated)) for v in values]
