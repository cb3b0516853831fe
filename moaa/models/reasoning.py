"""Reasoning text of thinking models, split from the answer at the model seam.

Reasoning models send their thinking either inside the content (`<think>...</think>`, as Qwen3,
QwQ and DeepSeek-R1 served by llama.cpp, Ollama or a vLLM without a reasoning parser do; some
chat templates open the block in the prompt, so only `</think>` appears) or in a separate message
field (`reasoning_content`: DeepSeek's API, vLLM's reasoning parsers, llama.cpp's server;
`reasoning`: newer vLLM, Ollama's OpenAI API). `split_reasoning` returns both parts so that
answers, DPO sides and judge verdicts carry only the answer and the trace keeps the thinking;
`with_reasoning` puts it back as one leading `<think>` block for users who want reasoning data.
"""

from __future__ import annotations

import re
from typing import Any

_OPEN, _CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
REASONING_FIELDS = ("reasoning_content", "reasoning")


def split_reasoning(content: str, separate: str | None = None) -> tuple[str, str]:
    """(answer, reasoning) of one reply: think blocks taken out of `content`, joined with `separate`."""
    parts = [separate.strip()] if separate and separate.strip() else []
    text = content
    if _CLOSE in text and _OPEN not in text.split(_CLOSE, 1)[0]:
        head, text = text.split(_CLOSE, 1)  # the template opened the block: all before </think> is thinking
        parts.append(head.strip())
    parts += [m.strip() for m in _BLOCK.findall(text)]
    text = _BLOCK.sub("", text)
    if _OPEN in text:  # an unclosed block (cut at max_tokens while thinking): no answer after it
        text, rest = text.split(_OPEN, 1)
        parts.append(rest.strip())
    return text.strip() if parts else content, "\n\n".join(p for p in parts if p)


def with_reasoning(answer: str, reasoning: str) -> str:
    """The answer led by its reasoning as one think block (the answer alone when there is none)."""
    return f"{_OPEN}\n{reasoning}\n{_CLOSE}\n\n{answer}" if reasoning else answer


def message_reasoning(message: dict[str, Any]) -> str | None:
    """The reasoning a message carries in a field of its own, if any."""
    for key in REASONING_FIELDS:
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def reasoning_tokens(usage: dict[str, Any]) -> int:
    """`usage.completion_tokens_details.reasoning_tokens` (OpenAI, vLLM), 0 when not reported."""
    details = usage.get("completion_tokens_details")
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return int(value) if isinstance(value, (int, float)) else 0
