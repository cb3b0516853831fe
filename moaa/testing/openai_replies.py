"""Pure helpers of the OpenAI test server: deterministic replies, completion bodies, error bodies.

Default reply of choice i: ``"[model] answer <8 hex>: <last user message, first 40 chars>"`` followed by
``filler_words`` words, the hex being sha256 of (model, messages, seed, temperature, i). Greedy
(``greedy=True``): at temperature 0 (or unset) the seed and i are left out, as greedy decoding
ignores them: the same messages always get the same answer. Usage counts
words (``str.split``): prompt_tokens over all message contents, completion_tokens over all choices.
A responder may return a `Reply` to script the log-probabilities too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = (
    "429", "500", "503", "hang", "truncated", "empty", "drop", "garbage", "400", "401", "404", "length", "blank",
    "sse", "error200", "content_filter",
)  # fmt: skip
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}
FILLER = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
Responder = Callable[[dict], "str | list[str] | Reply | None"]


@dataclass(frozen=True)
class Reply:
    """A responder's answer with its own log-probabilities: `tokens` are the answer's tokens in
    order (their concatenation should be `content`), each with its top alternatives {token: logprob},
    the first being the token itself; returned, cut to the request's top_logprobs, when asked for."""

    content: str
    tokens: tuple[tuple[str, dict[str, float]], ...] = ()


def check_fault_kind(kind: str) -> str:
    """``kind`` itself when it is a known fault kind, else ValueError."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
    return kind


def message_text(content: Any) -> str:
    """The text of a message content (a string or a list of OpenAI content parts)."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def default_reply(req: dict, index: int, filler_words: int = 0, greedy: bool = False) -> str:
    """The deterministic reply of choice ``index`` for a chat request."""
    model, messages = req.get("model"), req.get("messages") or []
    if greedy and not req.get("temperature"):
        key = json.dumps([model, messages], sort_keys=True)
    else:
        key = json.dumps([model, messages, req.get("seed"), req.get("temperature"), index], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    filler = [FILLER[(int(digest, 16) + k) % len(FILLER)] for k in range(filler_words)]
    return " ".join([f"[{model}] answer {digest}: {last_user[:40]}", *filler])


def build_completion(
    req: dict,
    completion_id: str,
    *,
    responder: Responder | None = None,
    ignore_n: bool = False,
    filler_words: int = 0,
    truncate_at_max_tokens: bool = True,
    greedy: bool = False,
) -> dict:
    """The ``chat.completion`` object answering ``req`` (see the module docstring for the content)."""
    n = 1 if ignore_n else int(req.get("n") or 1)
    answer = responder(req) if responder else None
    scripted = answer if isinstance(answer, Reply) else None
    if answer is None:
        contents = [default_reply(req, i, filler_words, greedy) for i in range(n)]
    elif scripted is not None:
        contents = [scripted.content] * n
    else:
        contents = [answer] * n if isinstance(answer, str) else list(answer)
    limit = req.get("max_tokens", req.get("max_completion_tokens"))
    choices = []
    for i, content in enumerate(contents):
        words, finish = content.split(), "stop"
        if truncate_at_max_tokens and limit is not None and int(limit) < len(words):
            content, finish = " ".join(words[: int(limit)]), "length"
        message = {"role": "assistant", "content": content}
        top = int(req.get("top_logprobs") or 1)
        logprobs = None
        if req.get("logprobs"):
            own = scripted is not None and scripted.tokens
            logprobs = scripted_logprobs(scripted, top) if own else reply_logprobs(content, top)
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": logprobs})
    prompt = sum(len(message_text(m.get("content")).split()) for m in req["messages"] if isinstance(m, dict))
    completion = sum(len(c["message"]["content"].split()) for c in choices)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.get("model"),
        "choices": choices,
        "usage": usage,
    }


def reply_logprobs(content: str, top: int) -> dict:
    """OpenAI-shaped `logprobs` for `content`: one token per word or space run, each fairly sure of
    itself, with `top - 1` made-up alternatives (a digit's neighbours for digits)."""
    import re

    steps = []
    for token in re.findall(r"\d|\s+|[^\s\d]+", content):
        alternatives = (
            [str((int(token) + k) % 10) for k in (1, 9)] if token.isdigit() else [f"{token}~{k}" for k in (1, 2)]
        )
        tops = [{"token": token, "logprob": -0.1}] + [{"token": t, "logprob": -2.5} for t in alternatives][: top - 1]
        steps.append({"token": token, "logprob": -0.1, "top_logprobs": tops})
    return {"content": steps}


def scripted_logprobs(reply: Reply, top: int) -> dict:
    """OpenAI-shaped `logprobs` of a Reply's own tokens, `top` alternatives each."""
    steps = []
    for token, alternatives in reply.tokens:
        tops = [{"token": t, "logprob": lp} for t, lp in list(alternatives.items())[:top]]
        steps.append({"token": token, "logprob": alternatives.get(token, 0.0), "top_logprobs": tops})
    return {"content": steps}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    """An OpenAI-style error body."""
    err = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    return json.dumps({"error": err}).encode()
