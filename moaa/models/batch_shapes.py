"""Chat completion bodies as Anthropic's and Gemini's native requests, and their answers back as
chat completions: what moaa.models.batch_apis sends in a Message Batch or a Gemini batch and reads
from it. Pure functions over plain JSON (no SDK).

Left out because the native APIs have no equivalent: `seed`, `n` and `response_format` for Anthropic
(n > 1 becomes separate seeded calls before a request is built); `n` for Gemini. A judge on such an
endpoint in batch mode gets no JSON schema: its verdict goes through the tolerant parser.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; a body without one gets this
_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def anthropic_params(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion body as Messages API params: system turns joined into `system`, max_tokens
    required (4096 when the body has none), stop as stop_sequences; seed, n and response_format
    have no equivalent and are left out."""
    system = "\n\n".join(_text(m.get("content")) for m in body["messages"] if m.get("role") == "system")
    messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in body["messages"]
                if m.get("role") in ("user", "assistant")]  # fmt: skip
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    params: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": limit}
    if system:
        params["system"] = system
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            params[key] = body[key]
    if body.get("stop"):
        params["stop_sequences"] = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
    return params


def anthropic_completion(message: Any, api: Any) -> dict[str, Any]:
    """A Messages API message as a chat completion body (text blocks joined; thinking as reasoning)."""
    what = "a succeeded result's message"
    blocks = api.field(message, "content", what)
    text = "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    thinking = "".join(b.get("thinking", "") for b in blocks if isinstance(b, dict) and b.get("type") == "thinking")
    usage = message.get("usage") or {}
    reason = _ANTHROPIC_STOP.get(message.get("stop_reason"), "stop")
    choice_message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        choice_message["reasoning_content"] = thinking
    return {
        "id": message.get("id"), "object": "chat.completion", "model": message.get("model"),
        "choices": [{"index": 0, "message": choice_message, "finish_reason": reason}],
        "usage": {"prompt_tokens": int(usage.get("input_tokens") or 0),
                  "completion_tokens": int(usage.get("output_tokens") or 0)},
    }  # fmt: skip


def gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion body as a GenerateContentRequest (assistant turns as role model)."""
    system = "\n\n".join(_text(m.get("content")) for m in body["messages"] if m.get("role") == "system")
    contents = [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": _text(m.get("content"))}]}
                for m in body["messages"] if m.get("role") in ("user", "assistant")]  # fmt: skip
    config: dict[str, Any] = {}
    for key, name in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(key) is not None:
            config[name] = body[key]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    if body.get("stop"):
        config["stopSequences"] = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": system}]}
    if config:
        request["generationConfig"] = config
    return request


def gemini_completion(response: Any, model: str, api: Any) -> dict[str, Any]:
    """A GenerateContentResponse as a chat completion body (thought parts as reasoning)."""
    what = "an inlined response"
    candidate = (api.field(response, "candidates", what) or [{}])[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    thinking = "".join(p.get("text", "") for p in parts if p.get("thought"))
    usage = response.get("usageMetadata") or {}
    reason = {"STOP": "stop", "MAX_TOKENS": "length"}.get(candidate.get("finishReason"), "stop")
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["reasoning_content"] = thinking
    thoughts = int(usage.get("thoughtsTokenCount") or 0)
    return {
        "object": "chat.completion", "model": response.get("modelVersion") or model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": {"prompt_tokens": int(usage.get("promptTokenCount") or 0),
                  "completion_tokens": int(usage.get("candidatesTokenCount") or 0) + thoughts,
                  "completion_tokens_details": {"reasoning_tokens": thoughts}},
    }  # fmt: skip
