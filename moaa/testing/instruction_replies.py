"""A test server responder that plays instruction writers and their answerers (moaa.instructions).

`instruction_responder(request)`: a writer's call (moaa.prompts.instructions' templates) gets the
tasks it asked for in the examples' format, drawn from the call's own digest (model, messages,
seed), so other seeds write other tasks; among them, as small writers do, a copy of the first
example shown (a near-duplicate of a seed), and in every third call a task of three words. A task's
answer is its canonical output (the one its writer wrote) unless the task is about a "debate": then
each answer depends on the call's seed, so the answerers disagree. Every other request gets the
server's default reply (None). Used with `OpenAITestServer(responder=...)` or
`python -m moaa.testing.openai_server --replies instructions`.
"""

from __future__ import annotations

import hashlib
import json
import re

from moaa.testing.openai_replies import message_text

WRITER_MARK = "You write tasks for training an AI assistant."
_EXAMPLE = re.compile(r"^instruction: (.+)$", re.M)
_COUNT = re.compile(r"Write (\d+) new tasks")
_TOPIC = re.compile(r"^Compare (\w+) and (\w+) as (\w+) for a (\w+)")

SUBJECTS = ("copper", "granite", "bamboo", "cedar", "wool", "linen", "glass", "cork", "slate", "hemp", "clay",
            "marble", "walnut", "felt", "steel", "brick")  # fmt: skip
USES = ("flooring", "roofing", "insulation", "packaging", "furniture", "tools", "fencing", "decking")
AUDIENCES = ("student", "builder", "gardener", "debate", "chef", "sailor", "painter", "farmer", "nurse")


def instruction_responder(request: dict) -> str | None:
    """The reply to a writer's or an answerer's call (module docstring); None for anything else."""
    messages = request.get("messages") or []
    last = message_text(messages[-1].get("content")) if messages else ""
    if WRITER_MARK in last:
        return _write(request, last)
    topic = _TOPIC.match(last)
    if topic:
        return _answer(topic.groups(), request)
    return None


def _digest(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), 16)


def _write(request: dict, prompt: str) -> str:
    count = int(_COUNT.search(prompt).group(1)) if _COUNT.search(prompt) else 4
    with_input = "\ninput: " in prompt
    digest = _digest(request.get("model"), request.get("messages"), request.get("seed"))
    blocks = []
    shown = _EXAMPLE.findall(prompt)
    for k in range(count):
        if k == 0 and shown:  # a writer copying the first example it was shown
            instruction = shown[0]
        elif k == 1 and digest % 3 == 0:
            instruction = "Rate this material."
        else:
            pick = digest >> (16 * k)
            first, second = SUBJECTS[pick % 16], SUBJECTS[(pick >> 4) % 16]
            if first == second:
                second = SUBJECTS[(pick % 16 + 1) % 16]
            use, audience = USES[(pick >> 8) % len(USES)], AUDIENCES[(pick >> 11) % len(AUDIENCES)]
            instruction = f"Compare {first} and {second} as {use} for a {audience}."
        words = instruction.split()
        lines = [f"instruction: {instruction}"]
        if with_input:
            lines.append(f"input: Budget {digest % 900 + 100} euros, {len(words)} square metres.")
        lines += [f"output: {_canonical(instruction)}", "|EoS|"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _canonical(instruction: str) -> str:
    topic = _TOPIC.match(instruction)
    if not topic:
        return "It depends on the material."
    first, second, use, audience = topic.groups()
    return f"For {use}, {first} is durable and {second} is light; a {audience} would choose by cost."


def _answer(topic: tuple[str, ...], request: dict) -> str:
    first, second, use, audience = topic
    if audience == "debate":  # answerers disagree: each answer is its own
        words = [SUBJECTS[(_digest(request.get("seed"), request.get("model"), i) >> 3) % 16] for i in range(8)]
        return " ".join(words)
    return f"For {use}, {first} is durable and {second} is light; a {audience} would choose by cost."
