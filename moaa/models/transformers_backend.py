"""An in-process chat client that generates with transformers: the trained student behind the model seam.

Selected in a config by `backend: transformers`; `model:` is a model folder, a LoRA adapter folder
(merged into its base on load, see moaa.models.student), a `.gguf` file, `local` (the embedded
student) or a Hub id:

    endpoints:
      student: {backend: transformers, model: runs/dpo/local-moa-v1-20250101-120000}

The model is loaded once per process and shared by every client naming it; generation runs in a
worker thread (`asyncio.to_thread`) under a lock, so one `generate` runs at a time and the event
loop stays free. The student's chat template renders the messages; temperature (0 = greedy),
top_p, max_tokens, seed, stop strings and `n` are honoured; `response_format` is not enforced
(small models are asked for JSON in the prompt, and judges parse tolerantly). Usage is counted in
the tokenizer's tokens and recorded like OpenAIChatClient does.

This is for small models and tests: it runs one request at a time. For real models, serve them with
an OpenAI-compatible server, e.g. `vllm serve runs/sft/<run>/merged` (merge a LoRA run with
`--merge`) or llama.cpp's `llama-server -m model.gguf`, and name it as an ordinary endpoint
(`base_url: http://127.0.0.1:8000/v1`): batching and concurrency then come from the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from moaa.config import EndpointConfig, Sampling
from moaa.models.client import Completion, Message
from moaa.models.endpoint_client import EndpointClient
from moaa.models.stats import RunStats

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512  # when neither the call nor the endpoint sets max_tokens


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    lock: threading.Lock  # one generate at a time per model


_LOADED: dict[str, LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


def load(ref: str) -> LoadedModel:
    """The model `ref` names, loaded once per process (adapters merged, eval mode)."""
    from moaa.models.student import load_model, load_tokenizer, resolve_model

    with _LOAD_LOCK:
        if ref not in _LOADED:
            import torch

            path = resolve_model(ref)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            started = time.perf_counter()
            model = load_model(path, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device).eval()
            tokenizer = load_tokenizer(path)
            tokenizer.padding_side = "left"
            _LOADED[ref] = LoadedModel(model, tokenizer, device, threading.Lock())
            log.info("loaded %s on %s in %.1f s", path, device, time.perf_counter() - started)
        return _LOADED[ref]


def unload(ref: str | None = None) -> None:
    """Forget one loaded model (or all), so its memory can be freed."""
    with _LOAD_LOCK:
        for key in [ref] if ref else list(_LOADED):
            _LOADED.pop(key, None)


class TransformersChatClient(EndpointClient):
    """ChatClient over a local transformers model (see the module docstring)."""

    def __init__(self, name: str, endpoint: EndpointConfig, stats: RunStats):
        self.name = name
        self.model = endpoint.model
        self.endpoint = endpoint
        self.stats = stats

    # chat(): EndpointClient's (the sampling merge; generate() honours n itself)

    async def _answer(
        self, messages: list[Message], params: Sampling, n: int, response_format: dict[str, Any] | None, tag: str
    ) -> Completion:
        if response_format:
            log.debug("%s: response_format is not enforced by the transformers backend", self.name)
        self.stats.record(self.name, tag, requests=1)
        started = time.perf_counter()
        texts, reasons, prompt_tokens, completion_tokens = await asyncio.to_thread(self._generate, messages, params, n)
        latency = time.perf_counter() - started
        completion = Completion(texts, reasons, prompt_tokens, completion_tokens, latency, self.name, self.model)
        self._account(completion, tag)
        return completion

    async def aclose(self) -> None:
        return None

    def _generate(self, messages: list[Message], p: Sampling, n: int) -> tuple[list[str], list[str], int, int]:
        import torch

        loaded = load(self.model)
        tok = loaded.tokenizer
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        encoded = tok(text, return_tensors="pt", add_special_tokens=False)
        inputs = {k: encoded[k].to(loaded.device) for k in ("input_ids", "attention_mask")}  # no token_type_ids
        prompt_len = inputs["input_ids"].shape[1]
        max_new = p.max_tokens or DEFAULT_MAX_TOKENS
        greedy = p.temperature is not None and p.temperature == 0
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": tok.pad_token_id}
        if greedy:
            kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            temperature = 1.0 if p.temperature is None else p.temperature
            kwargs |= {"do_sample": True, "temperature": temperature, "top_p": p.top_p or 1.0, "top_k": 0}
            kwargs["num_return_sequences"] = n
        if p.stop:
            kwargs |= {"stop_strings": list(p.stop), "tokenizer": tok}
        with loaded.lock:
            if p.seed is not None:
                torch.manual_seed(p.seed)  # under the lock: the seed decides this call's samples alone
            with torch.no_grad():
                out = loaded.model.generate(**inputs, **kwargs)
        sequences = [out[0]] * n if greedy else list(out)  # greedy: n identical answers, as a server gives
        eos = _eos_ids(loaded.model, tok)
        texts, reasons, used = [], [], 0
        for seq in sequences:
            new = seq[prompt_len:].tolist()
            end = next((i for i, t in enumerate(new) if t in eos), None)
            body = new if end is None else new[:end]
            used += len(body)
            decoded = tok.decode(body, skip_special_tokens=True)
            cut, stopped = _cut_at_stop(decoded, p.stop)
            texts.append(cut)
            reasons.append("length" if end is None and not stopped and len(new) >= max_new else "stop")
        return texts, reasons, prompt_len, used

    def _account(self, c: Completion, tag: str) -> None:
        empty = sum(1 for t in c.texts if not t.strip())
        truncated = sum(1 for r in c.finish_reasons if r == "length")
        self.stats.record(
            self.name, tag, latency=c.latency_s, calls=1, prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens, empty=empty, truncated=truncated, latency_s=c.latency_s,
        )  # fmt: skip


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        found.add(tokenizer.pad_token_id)  # a shorter sample of a batch is padded after its eos
    return found


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """The text up to (not including) the first stop string, and whether one was found."""
    if not stop:
        return text, False
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
