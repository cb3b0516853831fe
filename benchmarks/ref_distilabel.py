"""distilabel's Mixture-of-Agents on the throughput benchmark's MoA (3 proposers + aggregator), for a reference row.

Usage: /path/to/distilabel-venv/bin/python benchmarks/ref_distilabel.py BASE_URL PROMPTS.jsonl WORK_DIR [CONCURRENCY]

Runs in distilabel's own interpreter (distilabel 1.5.3 cannot share moaa's venv), so it imports
only distilabel and the standard library. A pipeline as distilabel's docs write one:
`LoadDataFromDicts >> TextGeneration(llm=MixtureOfAgentsLLM(...))` with three `OpenAILLM`
proposers (temperatures 0.3, 0.7, 1.0) and an `OpenAILLM` aggregator (0.2), one round, so each
prompt costs 3 proposer calls and then 1 aggregator call that sees the three answers (in
distilabel's own MoA system prompt; the proposers hand MoA their texts, see `Proposer`).
distilabel's concurrency is its batch: a batch of B prompts sends its 3B proposer calls at once,
then its B aggregator calls, so B = CONCURRENCY // 3 keeps at most CONCURRENCY calls in flight.
Cache off (`use_cache=False`), its data folder in WORK_DIR, no retries in the client
(`max_retries=0`, as the other rows see no errors). Prints `RESULT <json>` last.

Offline: Hugging Face offline and without telemetry, and a dead proxy catches any non-local request.
"""

from __future__ import annotations

import json
import os
import sys
import time

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",  # anything not local fails at once instead of leaving
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "DISTILABEL_LOG_LEVEL": "WARNING",
}
PROPOSER_TEMPERATURES = (0.3, 0.7, 1.0)
AGGREGATOR_TEMPERATURE = 0.2
MAX_TOKENS = 256
os.environ.update(OFFLINE | {"OPENAI_API_KEY": "bench"})  # before distilabel's imports; its workers import this too

from distilabel.models.llms import MixtureOfAgentsLLM, OpenAILLM  # noqa: E402
from distilabel.pipeline import Pipeline  # noqa: E402
from distilabel.steps import LoadDataFromDicts  # noqa: E402
from distilabel.steps.tasks import TextGeneration  # noqa: E402


class Proposer(OpenAILLM):
    """An OpenAILLM whose outputs MoA can read: 1.5.3's MoA chains its proposers' output dicts,
    which yields their keys ("generations", "statistics"), not their texts, as the references."""

    async def _agenerate(self, inputs: list, num_generations: int = 1, **kwargs: object) -> list:
        return [out["generations"] for out in await super()._agenerate(inputs, num_generations, **kwargs)]


def main(argv: list[str]) -> int:
    base_url, prompts_path, work = argv[0], argv[1], argv[2]
    concurrency = int(argv[3]) if len(argv) > 3 else 64
    os.environ["DISTILABEL_CACHE_DIR"] = os.path.join(work, "distilabel-cache")

    def llm(temperature: float, cls: type = OpenAILLM) -> OpenAILLM:
        return cls(model="test-model", base_url=base_url, api_key="bench", max_retries=0, timeout=60,
                   generation_kwargs={"temperature": temperature, "max_new_tokens": MAX_TOKENS})  # fmt: skip

    with open(prompts_path) as fh:
        data = [{"id": row["id"], "instruction": row["prompt"]} for row in map(json.loads, fh)]
    batch = max(1, concurrency // 3)
    began = time.time()
    with Pipeline(name="bench-moa", cache_dir=os.path.join(work, "distilabel-cache")) as pipeline:
        proposers = [llm(t, Proposer) for t in PROPOSER_TEMPERATURES]
        moa = MixtureOfAgentsLLM(aggregator_llm=llm(AGGREGATOR_TEMPERATURE), proposers_llms=proposers, rounds=1)
        load = LoadDataFromDicts(data=data, batch_size=batch)
        generate = TextGeneration(llm=moa, input_batch_size=batch)
        load >> generate
    distiset = pipeline.run(use_cache=False)
    rows = distiset["default"]["train"]
    answered = sum(1 for r in rows if r["generation"])
    result = {"began": began, "seconds": time.time() - began, "rows": len(rows), "answered": answered,
              "batch": batch}  # fmt: skip
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":  # distilabel runs its steps in worker processes
    sys.exit(main(sys.argv[1:]))
