"""The data set the preference stage writes trains DPO as it is: rows.jsonl -> datasets.Dataset ->
one TRL DPOTrainer step on a tiny random Llama (built by the test, no Hub)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from fakes import FakeCall, FakeClient
from tiny_models import build_tiny_causal_lm

from moaa.config import PreferenceConfig
from moaa.preference import bias_report, run_preference_prompts
from moaa.rows import Prompt
from moaa.work.shards import ShardOutput, read_jsonl

TOPICS = ["rivers", "tea", "owls", "chess", "bread", "kites", "glass", "moss"]


def policy(call: FakeCall) -> list[str]:
    topic = call.last_user.split()[-1].rstrip("?")
    return [
        f"Short note on {topic}.",
        f"A careful, correct answer about {topic} with one example.",
        f"{topic}?",
        f"An answer about {topic} that is mostly right.",
    ]


def judge(call: FakeCall) -> str:
    answer = re.search(r"<candidate id=1>\n(.*?)\n</candidate>", call.last_user, re.DOTALL).group(1)
    rating = 5 if "careful" in answer else 1 if answer.endswith("?") else 3
    keys = re.findall(r"\((\w+)\): ", call.last_user)
    return json.dumps({k: {"rationale": "", "rating": rating} for k in keys})


def write_preference_shard(folder) -> None:
    """What moaa.work.stage_shard does for a preference shard: stream prompts, append each result."""
    prompts = [Prompt.from_messages([{"role": "user", "content": f"Tell me about {t}?"}]) for t in TOPICS]
    pref = PreferenceConfig.model_validate(
        {
            "enabled": True,
            "policy": {"endpoint": "pol", "temperature": 0.9},
            "samples": 4,
            "scorer": {"kind": "pointwise", "judges": [{"endpoint": "judge"}]},
            "min_margin": 1.0,
        }
    )
    clients = {"pol": FakeClient("pol", responder=policy), "judge": FakeClient("judge", responder=judge)}
    out = ShardOutput(folder)

    def on_result(result) -> None:
        rows = [result.row.to_dict()] if result.row else []
        out.add(rows, [t.to_dict() for t in result.trace], [result.failure.to_dict()] if result.failure else [])

    asyncio.run(run_preference_prompts(prompts, pref, clients, on_result=on_result, max_in_flight=4))
    out.close()


@pytest.mark.slow
def test_stage_output_trains_one_dpo_step(tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    write_preference_shard(tmp_path / "shard")
    rows = list(read_jsonl(tmp_path / "shard" / "rows.jsonl"))
    assert len(rows) == len(TOPICS)
    assert all(
        r["chosen"][0]["content"].startswith("A careful") and r["rejected"][0]["content"].endswith("?") for r in rows
    )
    report = bias_report(rows, list(read_jsonl(tmp_path / "shard" / "trace.jsonl")), {})
    assert report["scored_candidates"] == 4 * len(TOPICS) and report["chosen_longer_share"] == 1.0

    dataset = Dataset.from_json(str(tmp_path / "shard" / "rows.jsonl"))
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    lm = build_tiny_causal_lm(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(lm)
    tokenizer = AutoTokenizer.from_pretrained(lm)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_length=128,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    output = trainer.train()
    assert output.global_step == 1
    assert torch.isfinite(torch.tensor(output.training_loss))
    changed = [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]
    assert len(changed) == len(before)
