"""The JSON of one chat completion: the request body moaa sends and the Completion read from the reply.

Plain data in and out (no SDK models): building and parsing typed request and reply objects cost
more CPU per call than everything else moaa does with a call. moaa.models.client re-exports these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moaa.config import EndpointConfig, Sampling
from moaa.models.reasoning import message_reasoning, reasoning_tokens, split_reasoning, with_reasoning

Message = dict[str, str]


@dataclass
class Completion:
    """One answered request: `n` texts with their finish reasons, usage and timing."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    endpoint: str
    model: str
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The first choice's tokens, when asked for (Sampling.top_logprobs): [{"token", "top": {token: logprob}}]
    logprobs: list[dict[str, Any]] | None = None
    # Per text, the reasoning split off it (moaa.models.reasoning); None when no text had any.
    reasoning: list[str] | None = None
    reasoning_tokens: int = 0  # of completion_tokens, where usage reports them

    @property
    def text(self) -> str:
        return self.texts[0]


class _Malformed(ValueError):
    pass


# ------------------------------------------------------------ request bodies


def build_request_body(
    endpoint: EndpointConfig, messages: list[Message], p: Sampling, n: int, fmt: dict | None
) -> dict[str, Any]:
    """The chat completion body: model, messages, the set sampling fields (max_tokens under the
    endpoint's `token_limit_param`), n, response_format, then the endpoint's and the call's
    extra_body for every key the body does not already hold."""
    body: dict[str, Any] = {"model": endpoint.model, "messages": messages}
    for key in ("temperature", "top_p", "max_tokens", "seed", "stop"):
        value = getattr(p, key)
        if value is not None:
            body[endpoint.token_limit_param if key == "max_tokens" else key] = value
    if p.top_logprobs:
        body["logprobs"], body["top_logprobs"] = True, p.top_logprobs
    if n > 1:
        body["n"] = n
    if fmt:
        body["response_format"] = fmt
    extra = endpoint.extra_body | (p.extra_body or {})
    return body | {k: v for k, v in extra.items() if k not in body}


def request_options(endpoint: EndpointConfig) -> dict[str, Any]:
    """What besides messages and sampling shapes an endpoint's answers, for the request cache key:
    only the settings that differ from their defaults, so keys made before they existed stay valid."""
    options: dict[str, Any] = {}
    if endpoint.extra_body:
        options["extra_body"] = endpoint.extra_body
    if endpoint.token_limit_param != "max_tokens":
        options["token_limit_param"] = endpoint.token_limit_param
    if endpoint.keep_reasoning:
        options["keep_reasoning"] = True
    return options


# ------------------------------------------------------------ replies


def parse_completion(data: Any, name: str, model: str, latency: float, keep_reasoning: bool = False) -> Completion:
    """A Completion from a chat completion's JSON, read as plain data (the SDK's typed models cost
    more CPU per request than everything else moaa does with it). Reasoning (think blocks, or a
    reasoning_content/reasoning field) is split off the texts into `reasoning` unless kept."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list):
        error = data.get("error") if isinstance(data, dict) else None
        if error:  # some proxies and servers answer 200 with an error body
            text = error.get("message") if isinstance(error, dict) else error
            raise _Malformed(f"HTTP 200 with an error instead of an answer: {str(text or error)[:200]}")
        raise _Malformed("response has no choices")
    texts, reasons, thoughts = [], [], []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _Malformed("choice without a message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _Malformed(f"message content is {type(content).__name__}, not text")
        answer, thought = split_reasoning(content or "", message_reasoning(message))
        texts.append(with_reasoning(answer, thought) if keep_reasoning else answer)
        thoughts.append(thought)
        reasons.append(choice.get("finish_reason") or "stop")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    # Reasoning tokens are output tokens (billed as such); usage's completion_tokens includes them.
    estimated = sum(len(t) // 4 for t in texts) + (0 if keep_reasoning else sum(len(t) // 4 for t in thoughts))
    completion_tokens = int(usage.get("completion_tokens") or 0) or estimated
    completion = Completion(texts, reasons, prompt_tokens, completion_tokens, latency, name, model)
    completion.logprobs = token_logprobs(choices[0])
    completion.reasoning = thoughts if any(thoughts) else None
    completion.reasoning_tokens = reasoning_tokens(usage)
    return completion


def token_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A choice's `logprobs.content` as [{"token", "top": {token: logprob}}], or None when absent."""
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for step in content:
        if not isinstance(step, dict) or not isinstance(step.get("token"), str):
            return None
        top = {t["token"]: float(t["logprob"]) for t in step.get("top_logprobs") or [] if isinstance(t, dict)}
        top.setdefault(step["token"], float(step.get("logprob") or 0.0))
        out.append({"token": step["token"], "top": top})
    return out
