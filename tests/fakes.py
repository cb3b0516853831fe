"""A deterministic fake ChatClient for pure-logic tests (no HTTP).

    client = FakeClient("a", responder=lambda call: "hello" if call.n == 1 else None)
    await client.chat(messages, sampling, n=2, tag="sft.proposer.propose@v1")
    client.calls[0].tag, client.calls[0].seed, client.calls[0].system

A responder gets the FakeCall and returns a str (every choice), a list of str (the choices), None
(the default reply), or an exception instance to raise (e.g. CallError("server_error", "boom")).
The default reply of choice i is ``"[<model>] answer <8 hex>"``, the hex being a hash of the
model, messages, seed and i, so different seeds or inputs give different texts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moaa.config import EndpointConfig, Sampling
from moaa.models.client import Completion


@dataclass
class FakeCall:
    messages: list[dict[str, str]]
    sampling: Sampling | None
    n: int
    response_format: dict[str, Any] | None
    tag: str
    client: str = ""

    @property
    def seed(self) -> int | None:
        return self.sampling.seed if self.sampling else None

    @property
    def system(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "system"), "")

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def default_text(model: str, messages: list[dict[str, str]], seed: int | None, index: int) -> str:
    key = json.dumps([model, messages, seed, index], sort_keys=True)
    return f"[{model}] answer {hashlib.sha256(key.encode()).hexdigest()[:8]}"


@dataclass
class FakeClient:
    name: str = "fake"
    model: str = ""
    responder: Callable[[FakeCall], Any] | None = None
    delay_s: float = 0.0
    prompt_tokens: int = 10
    calls: list[FakeCall] = field(default_factory=list)
    endpoint: EndpointConfig | None = None  # the ChatClient protocol's; a fake stands for no endpoint

    def __post_init__(self) -> None:
        self.model = self.model or f"{self.name}-model"

    async def chat(
        self,
        messages: list[dict[str, str]],
        sampling: Sampling | None = None,
        *,
        n: int = 1,
        response_format: dict[str, Any] | None = None,
        tag: str = "",
    ) -> Completion:
        call = FakeCall([dict(m) for m in messages], sampling, n, response_format, tag, self.name)
        self.calls.append(call)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = self.responder(call) if self.responder else None
        if isinstance(out, BaseException):
            raise out
        if out is None:
            texts = [default_text(self.model, call.messages, call.seed, i) for i in range(n)]
        elif isinstance(out, str):
            texts = [out] * n
        else:
            texts = list(out)
        tokens = sum(len(t.split()) for t in texts)
        return Completion(texts, ["stop"] * len(texts), self.prompt_tokens, tokens, 0.001, self.name, self.model)


def fake_clients(*names: str, **kwargs: Any) -> dict[str, FakeClient]:
    """One FakeClient per endpoint name, sharing `kwargs`."""
    return {name: FakeClient(name, **kwargs) for name in names}


def all_calls(clients: dict[str, FakeClient]) -> list[FakeCall]:
    return [call for client in clients.values() for call in client.calls]
