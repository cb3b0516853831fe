"""Pure helpers of the OpenAI test server: deterministic replies, completion bodies, error bodies, and
what each fault kind answers.

Default reply of choice i: ``"[model] answer <8 hex>: <last user message, first 40 chars>"`` followed by
``filler_words`` words, the hex being sha256 of (model, messages, seed, temperature, i). Greedy
(``greedy=True``): at temperature 0 (or unset) the seed and i are left out, as greedy decoding
ignores them: the same messages always get the same answer. Usage counts
words (``str.split``): prompt_tokens over all message contents, completion_tokens over all choices.
A responder may return a `Reply` to script the log-probabilities too.

Fault kinds (chat completions only; /health and /v1/models never fail): "429" (with Retry-After),
"500", "503", "400", "401", "404" (OpenAI-style error bodies), "hang" (no answer for hang_s, then
close), "truncated" (200, JSON cut in the middle, Content-Length of the cut body), "empty" (200,
empty body), "drop" (close without answering), "garbage" (200, an HTML page as text/html), "length"
(200, each choice cut to half its words with finish_reason "length", as at max_tokens), "blank" (200,
every choice's content ""), "sse" (200, the completion as a text/event-stream of chunks though no
stream was asked for), "error200" (200 with an OpenAI-style error body and no choices, as some
proxies answer), "content_filter" (200, every choice empty with finish_reason "content_filter").
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
Answer = tuple[int | None, bytes, dict[str, str]]  # (status, body, extra headers); status None: no answer


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


def fault_answer(fault: str | None, *, retry_after_s: float, echo_key: bool = False, auth: str = "") -> Answer | None:
    """The answer to a chat request under a fault that needs no completion: an OpenAI-style error (a 429
    with Retry-After; a 400 repeating ``auth`` when ``echo_key``), none ("hang", "drop"), an empty body,
    an HTML page, an error body in a 200. None for no fault and for the faults that alter a completion."""
    if fault in ("429", "500", "503", "400", "401", "404"):
        status = int(fault)
        extra = {"Retry-After": f"{retry_after_s:g}"} if status == 429 else {}
        echo = f" Request had Authorization: {auth}" if echo_key and status == 400 else ""
        return status, error_body(status, f"Injected fault {fault}.{echo}"), extra
    if fault in ("hang", "drop"):
        return None, b"", {}
    if fault == "empty":
        return 200, b"", {}
    if fault == "garbage":
        return 200, b"<html><body>502 Bad Gateway (injected garbage)</body></html>", {"Content-Type": "text/html"}
    if fault == "error200":
        return 200, error_body(503, "Injected error in a 200 answer: the model is overloaded."), {}
    return None


def faulted_completion(completion: dict, fault: str | None) -> Answer:
    """The 200 answer carrying ``completion`` under ``fault`` (None: as built): "truncated" cuts the JSON in
    half; "length" halves each choice's words, "blank" empties them, "content_filter" empties them with
    that finish_reason; "sse" sends it as a text/event-stream nobody asked for. Alters ``completion``."""
    out = json.dumps(completion).encode()
    if fault == "truncated":
        out = out[: len(out) // 2]
    elif fault in ("length", "blank", "content_filter"):
        for choice in completion["choices"]:
            words = choice["message"]["content"].split()
            choice["message"]["content"] = " ".join(words[: len(words) // 2]) if fault == "length" else ""
            choice["finish_reason"] = {"length": "length", "blank": "stop"}.get(fault, "content_filter")
        out = json.dumps(completion).encode()
    elif fault == "sse":
        chunk = {"id": completion["id"], "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": completion["choices"][0]["message"]["content"]}}]}  # fmt: skip
        return 200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), {"Content-Type": "text/event-stream"}
    return 200, out, {}


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
