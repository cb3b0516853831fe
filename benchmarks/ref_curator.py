"""bespokelabs curator on the throughput benchmark's MoA (3 proposers + aggregator), for a reference row.

Usage: /path/to/curator-venv/bin/python benchmarks/ref_curator.py BASE_URL PROMPTS.jsonl WORK_DIR [CONCURRENCY]

Runs in curator's own interpreter (curator 0.1.31 cannot share moaa's venv), so it imports only
curator and the standard library. Two `curator.LLM` passes, as curator's docs chain them: the
proposers (every prompt three times, each row with its own temperature and seed through curator's
per-row `generation_params` column), then the aggregator over the three answers, its system
message built like moaa's AGGREGATE prompt. Concurrency is curator's `max_concurrent_requests`,
with request and token rates set far above what the test server can reach; curator's cache is
off (CURATOR_DISABLE_CACHE) and its cache folder lies in WORK_DIR. Prints `RESULT <json>` last.

Offline: telemetry (PostHog), the hosted viewer and litellm's remote cost map are off, Hugging
Face is offline, and a dead proxy catches any other non-local request. Note that curator's OpenAI
backend sends one probe (`messages: []`) per `LLM` at construction to read rate-limit headers.
"""

from __future__ import annotations

import json
import os
import sys
import time

OFFLINE = {
    "TELEMETRY_ENABLED": "false",  # curator's PostHog events
    "CURATOR_VIEWER": "0",  # no hosted viewer session
    "CURATOR_DISABLE_CACHE": "1",
    "CURATOR_DISABLE_RICH_DISPLAY": "1",  # stdout is a log file, not a terminal
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm fetches its cost map from GitHub otherwise
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",  # anything not local fails at once instead of leaving
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}
PROPOSER_TEMPERATURES = (0.3, 0.7, 1.0)
AGGREGATOR_TEMPERATURE = 0.2
MAX_TOKENS = 256
AGGREGATE = (  # moaa.prompts.generation.AGGREGATE, copied: this script cannot import moaa
    "Other assistants have already answered the latest user message. Their responses are listed "
    "below. Some of them may be wrong, incomplete, outdated or biased, and they may contradict each "
    "other. Weigh them critically, keep what is correct and useful, fix or leave out what is not, "
    "and write one answer of your own that is accurate, complete and clearly organised. Do not just "
    "copy one of them, and do not mention that you were shown other responses: answer the user "
    "directly.\n\nResponses:\n\n{responses}"
)


def bundled_tiktoken_dir() -> str:
    """litellm's copy of tiktoken's cl100k_base, which curator's token estimate would download."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin, "curator's venv has no litellm"
    return os.path.join(os.path.dirname(spec.origin), "litellm_core_utils", "tokenizers")


def aggregator_messages(prompt: str, answers: list[str]) -> list[dict[str, str]]:
    responses = "\n\n".join(f"Response {i}:\n{a.strip()}" for i, a in enumerate(answers, 1))
    return [{"role": "system", "content": AGGREGATE.format(responses=responses)}, {"role": "user", "content": prompt}]


def main(argv: list[str]) -> int:
    base_url, prompts_path, work = argv[0], argv[1], argv[2]
    concurrency = int(argv[3]) if len(argv) > 3 else 64
    os.environ.update(OFFLINE | {"CURATOR_CACHE_DIR": os.path.join(work, "curator-cache"), "OPENAI_API_KEY": "bench"})
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", bundled_tiktoken_dir())
    from bespokelabs import curator

    class Proposer(curator.LLM):
        def prompt(self, row: dict) -> list[dict[str, str]]:
            return [{"role": "user", "content": row["prompt"]}]

        def parse(self, row: dict, response: str) -> dict:
            return {"id": row["id"], "k": row["k"], "answer": response}

    class Aggregator(curator.LLM):
        def prompt(self, row: dict) -> list[dict[str, str]]:
            return aggregator_messages(row["prompt"], row["answers"])

        def parse(self, row: dict, response: str) -> dict:
            return {"id": row["id"], "response": response}

    backend = {"base_url": base_url, "api_key": "bench", "max_concurrent_requests": concurrency,
               "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10_000_000_000,
               "max_retries": 3, "request_timeout": 60}  # fmt: skip
    with open(prompts_path) as fh:
        prompts = [json.loads(line) for line in fh]
    proposer = Proposer(model_name="test-model", backend="openai", backend_params=dict(backend),
                        generation_params={"max_tokens": MAX_TOKENS})  # fmt: skip
    final_params = {"max_tokens": MAX_TOKENS, "temperature": AGGREGATOR_TEMPERATURE}
    aggregator = Aggregator(model_name="test-model", backend="openai", backend_params=dict(backend),
                            generation_params=final_params)  # fmt: skip
    began = time.time()
    rows = [{"id": p["id"], "prompt": p["prompt"], "k": k,
             "generation_params": json.dumps({"temperature": t, "seed": i * 3 + k})}
            for i, p in enumerate(prompts) for k, t in enumerate(PROPOSER_TEMPERATURES)]  # fmt: skip
    proposed = proposer(rows).dataset
    answers: dict[str, list[str]] = {}
    for row in sorted(proposed, key=lambda r: r["k"]):
        answers.setdefault(row["id"], []).append(row["answer"])
    final = aggregator([{"id": p["id"], "prompt": p["prompt"], "answers": answers[p["id"]]} for p in prompts]).dataset
    result = {"began": began, "seconds": time.time() - began, "proposals": len(proposed), "rows": len(final)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
