"""What every client of one endpoint shares: the call's sampling laid over the endpoint's, and `n`.

`merged_sampling` is the one sampling merge (the call's set fields win over `endpoint.sampling`);
the request cache keys on it and every client answers with it. `EndpointClient.chat` asks for `n`
answers in one request and, where a server returns fewer (llama.cpp ignores `n`) or is known not to
honour it, asks the rest as separate calls seeded seed+1, seed+2, ...: the same K answers whichever
way they come. Subclasses answer one request (`_answer`) and may say what they know of `n`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from moaa.config import EndpointConfig, Sampling
from moaa.models.request import Completion, Message

Ask = Callable[[Sampling, int], Awaitable[Completion]]  # (sampling, n) -> one request's answer


def merged_sampling(sampling: Sampling | None, endpoint: EndpointConfig | None) -> Sampling:
    """The call's sampling laid over the endpoint's defaults (set fields win)."""
    return (sampling or Sampling()).over(endpoint.sampling if endpoint is not None else None)


async def answer_n(ask: Ask, params: Sampling, n: int, honours_n: bool | None) -> tuple[Completion, int | None]:
    """`n` answers through `ask`, and how many the one request for n>1 answers returned (None when
    none was made: n is 1, or `honours_n` is False and n separate calls were asked at once).

    Otherwise one request for n answers, and the answers it lacks asked as separate calls."""
    if n > 1 and honours_n is False:
        return await separate_calls(ask, params, n, 0), None
    first = await ask(params, n)
    got = len(first.texts)
    if n > 1 and got < n:
        rest = await separate_calls(ask, params, n - got, got)
        return join_completions([first, rest]), got
    return first, (got if n > 1 else None)


async def separate_calls(ask: Ask, params: Sampling, count: int, offset: int) -> Completion:
    """`count` single answers, the i-th seeded (seed or 0) + offset + i, joined in order."""
    base = params.seed or 0
    calls = [ask(params.model_copy(update={"seed": base + offset + i}), 1) for i in range(count)]
    return join_completions(list(await asyncio.gather(*calls)))


def join_completions(parts: list[Completion]) -> Completion:
    """Several answered requests as one: texts in order, usage summed, the slowest latency."""
    head = parts[0]
    return Completion(
        texts=[t for p in parts for t in p.texts],
        finish_reasons=[r for p in parts for r in p.finish_reasons],
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        completion_tokens=sum(p.completion_tokens for p in parts),
        latency_s=max(p.latency_s for p in parts),
        endpoint=head.endpoint,
        model=head.model,
        cached=all(p.cached for p in parts),
        reasoning=_joined_reasoning(parts),
        reasoning_tokens=sum(p.reasoning_tokens for p in parts),
    )


def _joined_reasoning(parts: list[Completion]) -> list[str] | None:
    if not any(p.reasoning for p in parts):
        return None
    return [r for p in parts for r in (p.reasoning or [""] * len(p.texts))]


class EndpointClient:
    """Base of the clients that answer an endpoint's calls (HTTP, batches, transformers): the
    sampling merge and the n>1 fallback (module docstring); a subclass implements `_answer`."""

    name: str
    model: str
    endpoint: EndpointConfig

    async def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        *,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        tag: str = "",
    ) -> Completion:
        params = merged_sampling(sampling, self.endpoint)

        def ask(p: Sampling, k: int) -> Awaitable[Completion]:
            return self._answer(messages, p, k, response_format, tag)

        done, got = await answer_n(ask, params, n, self._honours_n())
        if got is not None:
            self._learned_n(got, n)
        return done

    async def _answer(
        self, messages: list[Message], params: Sampling, n: int, fmt: dict[str, Any] | None, tag: str
    ) -> Completion:
        """One request for `n` answers with the merged sampling."""
        raise NotImplementedError

    def _honours_n(self) -> bool | None:
        """Whether the endpoint is known to honour `n` (None: not known)."""
        return None

    def _learned_n(self, got: int, n: int) -> None:
        """A request for `n` answers returned `got` (fewer: the endpoint ignores `n`)."""
