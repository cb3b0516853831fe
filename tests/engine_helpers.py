"""Shared by the engine tests: a GenerationConfig over the fake endpoints a, b, c and agg, a prompt,
one answered prompt, a scripted SMoA moderator, and the reference blocks of an aggregation call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fakes import FakeCall

from moaa.config import GenerationConfig
from moaa.engine import answer_prompt
from moaa.rows import Prompt

ENDPOINTS = ("a", "b", "c", "agg")


def make_gen(method: str = "moa", **overrides: Any) -> GenerationConfig:
    raw: dict[str, Any] = {
        "method": method,
        "proposers": [{"endpoint": "a"}, {"endpoint": "b"}, {"endpoint": "c"}],
        "aggregator": {"endpoint": "agg"},
    }
    if method == "moa":
        raw["layers"] = 2  # these tests use the MoA-Lite shape; moa's own default (3) is tested in test_config
    raw.update(overrides)
    return GenerationConfig.model_validate(raw)


def ask(text: str = "What is MoA?", system: str | None = None) -> Prompt:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return Prompt.from_messages(messages, source="test")


def answer(prompt: Prompt, gen: GenerationConfig, clients: dict, **kwargs: Any):
    return asyncio.run(answer_prompt(prompt, gen, clients, **kwargs))


def moderator_says(selected: list[int], stop: bool = False, reasoning: str = "r"):
    """Responder for the aggregator endpoint: moderator JSON for moderator calls, default text otherwise."""

    def respond(call: FakeCall):
        if ".moderator." in call.tag:
            return json.dumps({"reasoning": reasoning, "selected": selected, "stop": stop})
        return None

    return respond


def headers(call: FakeCall) -> list[str]:
    """The header line of each 'Response i' block of a call's system message."""
    body = call.system.split("Responses:\n\n", 1)[1]
    return [block.split("\n", 1)[0] for block in body.split("\n\n") if block.startswith("Response ")]


def references(call: FakeCall) -> list[str]:
    """The 'Response i:' blocks of a call's system message, in order."""
    system = call.system
    if "Responses:" not in system:
        return []
    body = system.split("Responses:\n\n", 1)[1]
    return [block.split(":\n", 1)[1] for block in body.split("\n\n") if block.startswith("Response ")]
