"""A version for the viewer's tests, made by the real pipeline against the OpenAI test server: a 2-layer
MoA of three proposers whose aggregator borrows sentences from them, and a preference stage whose
policy samples three answers judged pairwise in both orders (with rationales, and a judge that
sometimes favours the first position, so some orders disagree). Then the same rows again as the next
version with a `verification` verdict on every SFT row and DPO side, shaped as issue 29 writes it
(this helper adds the column when moaa's own schema does not have it yet).

    version = make_view_version(tmp_path)     # inside the prefect_harness fixture; data/view-demo/v2
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

CANDIDATE_RE = re.compile(r"<candidate id=(\w+)>\n(.*?)\n</candidate>", re.DOTALL)
RESPONSE_RE = re.compile(r"Response \d+[^:\n]*:\n(.*?)(?=\n\nResponse \d+|\Z)", re.DOTALL)
SENTENCES = (
    "Start from the definition and check it against a small example before you generalise.",
    "The key quantity here is the ratio between the parts, not their absolute sizes.",
    "A common mistake is to add the parts instead of scaling them to the whole.",
    "Write the steps down in order, so that each one can be checked on its own.",
    "When the numbers are large, estimate first so you can tell a wrong answer at a glance.",
    "It helps to name every unknown before you write a single equation.",
    "Draw the situation: a sketch often shows which relation matters.",
    "Finally, substitute the result back into the question to confirm it.",
    "Units matter: carry them through every step and the answer checks itself.",
    "If two methods give different answers, one of them has a hidden assumption.",
    "Most of the work is reading the question carefully and restating it precisely.",
    "A short table of the intermediate values makes the reasoning easy to follow.",
)


def _pick(key: str, n: int) -> list[str]:
    """n different sentences, starting at a place the key decides."""
    start = hashlib.sha256(key.encode()).digest()[0]
    return [SENTENCES[(start + 5 * i) % len(SENTENCES)] for i in range(n)]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def responder(request: dict) -> str | list[str] | None:
    """Proposals, aggregates, policy samples and pairwise verdicts that read like answers."""
    messages = request.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    shown = CANDIDATE_RE.findall(last)
    if len(shown) == 2:
        (_, first), (_, second) = shown
        biased = int(hashlib.sha256((first + second).encode()).hexdigest(), 16) % 4 == 0
        winner = "A" if biased or len(first.split()) > len(second.split()) else "B"
        if not biased and len(first.split()) == len(second.split()):
            winner = "tie"
        words = (len(first.split()), len(second.split()))
        why = f"Answer {winner} is the more complete explanation ({words[0]} vs {words[1]} words)."
        return json.dumps({"rationale": why if winner != "tie" else "Both answers say the same.", "winner": winner})
    refs = [r.strip() for m in messages if m.get("role") == "system" for r in RESPONSE_RE.findall(m["content"])]
    question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    key = json.dumps([request.get("temperature"), request.get("seed"), question, len(refs)])
    if refs and "Other assistants have already answered" in " ".join(m["content"] for m in messages):
        parts = [_sentences(r) for r in refs]
        taken = [parts[0][0], parts[1 % len(parts)][-1]] if parts and parts[0] else []
        return " ".join([*taken, "Put together, the answer follows from these two observations."])
    n = int(request.get("n") or 1)
    answers = [" ".join([f"About '{question[:40]}':", *_pick(f"{key}:{i}", 2 + (i + len(question)) % 3)])
               for i in range(n)]  # fmt: skip
    return answers if n > 1 else answers[0]


def view_config(tmp_path: Path, base_url: str, name: str = "view-demo", prompts: int = 6):
    from tests.conftest import make_config

    return make_config(
        tmp_path, base_url, f"prompts.limit={prompts}", f"name={name}", "preference.enabled=true",
        "preference.policy.endpoint=test", "preference.samples=3", "preference.scorer.kind=pairwise",
        "preference.scorer.judges=[{endpoint: test}]", "output.test_size=0.3",
        "endpoints.test.price_input_per_mtok=0.9", "endpoints.test.price_output_per_mtok=0.9",
    )  # fmt: skip


def run_view_pipeline(config) -> dict[str, Any]:
    from prefect import flow

    from flows.pipeline_flow import run_pipeline

    @flow
    def view_flow():
        return run_pipeline(config)

    return view_flow()


def verdict(pid: str, side: str = "") -> dict[str, Any] | None:
    """A deterministic verification verdict (issue 29's shape); None (unchecked) for some rows."""
    n = int(hashlib.sha256(f"{pid}{side}".encode()).hexdigest(), 16) % 5
    if n == 4:
        return None
    status = "fail" if n == 0 or side == "rejected" else "pass"
    reason = "final answer 9 does not match 80" if status == "fail" else "final answer matches 80"
    return {"status": status, "reason": reason, "score": 1.0 if status == "pass" else 0.0,
            "checks": ["answer"], "answer": "80" if status == "pass" else "9"}  # fmt: skip


def with_verification(schemas_fn):
    """moaa.dataset.files.schemas with issue 29's `verification` column on sft and dpo (kept if present)."""
    import pyarrow as pa

    one = pa.struct([("status", pa.string()), ("reason", pa.string()), ("score", pa.float64()),
                     ("checks", pa.list_(pa.string())), ("answer", pa.string())])  # fmt: skip
    both = pa.struct([("chosen", one), ("rejected", one)])

    def schemas():
        found = dict(schemas_fn())
        for config, column in (("sft", one), ("dpo", both)):
            if "verification" not in found[config].names:
                found[config] = found[config].append(pa.field("verification", column))
        return found

    return schemas


def add_verdicts(root: Path, version: Path, folder: Path, monkeypatch) -> Path:
    """The next version of `version`: its rows again, each SFT row and DPO side with a verdict."""
    import pyarrow.parquet as pq

    import moaa.dataset.files as files
    from moaa.dataset.manifest import read_manifest
    from moaa.dataset.versions import write_version

    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for config in ("sft", "dpo", "trace", "failures"):
        rows = [r for f in sorted((version / "data" / config).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
        for row in rows:
            if config == "sft":
                row["verification"] = verdict(row["prompt_id"])
            elif config == "dpo":
                row["verification"] = {"chosen": verdict(row["prompt_id"], "chosen"),
                                       "rejected": verdict(row["prompt_id"], "rejected")}  # fmt: skip
        # A trace part holds one block of steps per prompt, as a stage's shard does (moaa.dataset.files._unique).
        groups = (
            {"": rows}
            if config != "trace"
            else {
                "sft": [r for r in rows if r["stage"] == "sft"],
                "preference": [r for r in rows if r["stage"] != "sft"],
            }
        )
        for stage, mine in groups.items():
            if mine:
                path = folder / config / stage / "part" / f"{config}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in mine), encoding="utf-8")
                parts.setdefault(config, []).append(path)
    manifest = read_manifest(version)
    monkeypatch.setattr(files, "schemas", with_verification(files.schemas))
    info = write_version(root, version.parent.name, parts, config=manifest["config"],
                         run_info={"stats": manifest.get("stats"), "counts": manifest.get("counts"),
                                   "methods": manifest.get("methods"), "summary_text": manifest.get("summary")},
                         test_size=manifest["split"]["test_size"], split_seed=manifest["split"]["seed"],
                         license="apache-2.0", tags=[])  # fmt: skip
    return info.path


def make_view_version(tmp_path: Path, monkeypatch, prompts: int = 6) -> Path:
    """data/view-demo/v1 from the pipeline, and v2 = v1 with verification verdicts; returns v2's folder."""
    from moaa.testing.openai_server import OpenAITestServer

    with OpenAITestServer(responder=responder) as server:
        config = view_config(tmp_path, server.base_url, prompts=prompts)
        summary = run_view_pipeline(config)
    v1 = Path(summary["version_path"])
    return add_verdicts(v1.parent.parent, v1, tmp_path / "verdict-parts", monkeypatch)
