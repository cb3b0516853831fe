"""Shared by the data set version tests: the parts a run leaves (SFT, trace, DPO, failures as JSONL),
a demo version written from them, and `load_dataset` run offline on a version."""

from __future__ import annotations

import json
from pathlib import Path

from moaa.dataset.versions import write_version

N_PROMPTS = 40
TEST_SIZE = 0.25
SEED = 7


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parts(folder: Path, n: int = N_PROMPTS, dpo: bool = True) -> dict[str, list[Path]]:
    """Small JSONL parts as the stages write them: sft/dpo/trace for n prompts and 2 failures.

    sft and trace are spread over two files each, as shards are."""
    folder.mkdir(parents=True, exist_ok=True)
    sft, pairs, trace = [], [], []
    for i in range(n):
        pid = f"p{i:03d}"
        user = {"role": "user", "content": f"Question {i}?"}
        answer = {"role": "assistant", "content": "word " * (i + 1)}
        sft.append({"prompt_id": pid, "messages": [user, answer], "source": "fixture", "method": "moa",
                    "models": ["qwen-a", "qwen-b"], "category": "math" if i % 2 else None})  # fmt: skip
        pairs.append({"prompt_id": pid, "prompt": [user], "chosen": [answer],
                      "rejected": [{"role": "assistant", "content": "no"}], "score_chosen": 8 + i % 2,
                      "score_rejected": 2.5, "chosen_model": "qwen-a", "rejected_model": "qwen-b"})  # fmt: skip
        for kind, score in (("proposal", None), ("verdict", 7.0)):
            trace.append({"prompt_id": pid, "stage": "sft", "kind": kind, "text": "t", "agent": "a0", "model": "qwen-a",
                          "role": "", "turn": 0, "layer": 1, "index": 0, "selected": True, "prompt_tokens": 10,
                          "completion_tokens": 5, "latency_s": 0.1, "finish_reason": "stop", "cached": False,
                          "score": score, "meta": {"why": "ok"}})  # fmt: skip
    failures = [
        {"prompt_id": f"f{i}", "stage": "sft", "reason": "aggregator_failed", "error": "timeout"} for i in (1, 2)
    ]
    half = n // 2
    parts = {
        "sft": [_jsonl(folder / "sft-0.jsonl", sft[:half]), _jsonl(folder / "sft-1.jsonl", sft[half:])],
        "trace": [
            _jsonl(folder / "trace-0.jsonl", trace[: 2 * half]),
            _jsonl(folder / "trace-1.jsonl", trace[2 * half :]),
        ],
        "failures": [_jsonl(folder / "failures.jsonl", failures)],
    }
    if dpo:
        parts["dpo"] = [_jsonl(folder / "dpo.jsonl", pairs)]
    return parts


CONFIG = {
    "name": "demo",
    "endpoints": {"small": {"model": "qwen-a", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "DEMO_API_KEY"}},
    "output": {"root": "data", "publish_repo_id": None},
}
RUN_INFO = {
    "stats": {
        "small": {
            "calls": 120,
            "requests": 123,
            "retries": 3,
            "failures": 0,
            "cache_hits": 4,
            "prompt_tokens": 9000,
            "completion_tokens": 3000,
            "cost": 0.25,
            "latency": {"p50": 0.4, "p90": 0.9},
        }
    },  # fmt: skip
    "counts": {"prompts_read": 42, "dropped": {"duplicate": 0}, "failures": {"aggregator_failed": 2}},
    "timings": {"sft_s": 12.5},
    "prompt_source": {"label": "fixture.jsonl", "fingerprint": "f00d"},
    "methods": ["moa"],
    "summary_text": "42 fixture prompts answered with MoA by qwen-a and qwen-b.",
}


def write_demo(root: Path, parts: dict[str, list[Path]], **kwargs) -> object:
    args = dict(config=CONFIG, run_info=RUN_INFO, test_size=TEST_SIZE, split_seed=SEED, license="apache-2.0",
                tags=["demo"]) | kwargs  # fmt: skip
    return write_version(root, "demo", parts, **args)


def _load(path: Path, config: str, cache: Path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return datasets.load_dataset(str(path), config, cache_dir=str(cache))
