"""What a call to an agent's endpoint needs, for every stage that makes one (engine, preference, ...).

An agent's client (`client_for`) and sampling (`sampling_for`), a stable per-call seed
(`derive_seed`), the response_format that carries a JSON schema to the endpoint (`json_format`),
the budget a cut answer is asked again with (`larger_budget`), and one n>1 reply's completion
tokens shared out over its answers (`split_tokens`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from moaa.config import AgentConfig, Sampling
from moaa.config.endpoints import SAMPLING_FIELDS
from moaa.errors import ConfigError
from moaa.models.client import ChatClient

# A grammar-constrained rationale may otherwise run on until max_tokens cuts the verdict off.
LOCAL_RATIONALE_CHARS = 240


def client_for(agent: AgentConfig, clients: dict[str, ChatClient], where: str) -> ChatClient:
    """The client of the agent's endpoint; a ConfigError naming `where` when none was built for it."""
    try:
        return clients[agent.endpoint]
    except KeyError:
        raise ConfigError(
            f"{where}: uses endpoint '{agent.endpoint}' but no client was built for it "
            f"(clients: {', '.join(sorted(clients)) or 'none'})"
        ) from None


def sampling_for(agent: AgentConfig, seed: int | None = None, **overrides: Any) -> Sampling:
    """The agent's sampling fields with `seed` (and `overrides`, e.g. a judge's temperature 0) set.

    Built without re-validating: the agent's fields are validated Sampling fields (once per call)."""
    values = {k: getattr(agent, k) for k in SAMPLING_FIELDS}
    values["seed"] = seed
    return Sampling.model_construct(**values | overrides)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from the parts (prompt id, turn, layer, agent, sample)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def json_format(client: ChatClient, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The response_format that carries `schema` to the client's endpoint (its own shape), else None."""
    endpoint = client.endpoint
    if endpoint is None or not endpoint.json_schema:
        return None
    if endpoint.json_schema_style == "llama.cpp":
        return {"type": "json_object", "schema": bounded_rationales(schema, LOCAL_RATIONALE_CHARS)}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def bounded_rationales(schema: Any, max_chars: int) -> Any:
    """A copy of `schema` whose "rationale" strings have a maxLength (llama.cpp's grammar honours it)."""
    if isinstance(schema, list):
        return [bounded_rationales(v, max_chars) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_rationales(v, max_chars) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict) and isinstance(props.get("rationale"), dict):
        props["rationale"] = props["rationale"] | {"maxLength": max_chars}
    return out


def larger_budget(client: ChatClient, sampling: Sampling, cut_tokens: int, cap: int) -> int | None:
    """The max_tokens to re-ask a cut answer with: twice its budget (the call's, else the endpoint's,
    else the cut answer's length), at most `cap`; None when that is no larger."""
    default = client.endpoint.sampling.max_tokens if client.endpoint is not None else None
    current = sampling.max_tokens or default or max(cut_tokens, 1)
    bigger = min(cap, 2 * current)
    return bigger if bigger > current else None


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """`total` completion tokens of one reply shared over its texts by length (n>1 replies report
    usage per call). The shares sum to `total` exactly: each text gets its share rounded down, and
    the tokens left go one each to the largest remainders (the earlier text on a tie); texts that
    are all empty share evenly."""
    weights = [len(t) for t in texts]
    whole = sum(weights)
    if whole == 0:
        weights, whole = [1] * len(texts), len(texts)
    if not texts:
        return []
    shares = [divmod(total * w, whole) for w in weights]
    out = [q for q, _ in shares]
    left = total - sum(out)
    for i in sorted(range(len(texts)), key=lambda i: -shares[i][1])[:left]:
        out[i] += 1
    return out
