"""An SFT row's trace as the mixture ran it: each turn's layers in order, a layer's answers side by side,
then what read them (the aggregate, a synthesis, SMoA's moderator), with the quality gates, tokens,
latency and cost of every call.

    view = build_mixture(trace_steps, manifest)     # the `trace` rows of one prompt, stage sft
    view.turns[0].layers[1].readers[0].segments      # the aggregate, its words tagged by input

What an aggregate took from each input is found by moaa.view.textdiff.borrowed against the answers
of the layer before it (the ones it was shown: the selected ones). The gates are moaa.engine.quality's,
run again on the written texts with the run's `sft.quality` settings, so a rejected aggregate says why.
Cost is each call's tokens at its endpoint's prices in the version's config (an answer from the
request cache at what it cost when first asked, as the card counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moaa.rows import trace_meta
from moaa.view.textdiff import Segment, borrowed, share_of

PROPOSALS = ("proposal", "sample", "answer")
READERS = ("aggregate", "synthesis", "moderator")


@dataclass
class Step:
    row: dict[str, Any]
    who: str
    status: str  # selected, not selected, failed, cut (max_tokens), ...
    cost: float | None
    meta: dict[str, Any]
    gate: str = ""  # an aggregate's quality gates: passed, or why it was rejected
    segments: list[Segment] = field(default_factory=list)
    shares: dict[object, float] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.row.get("prompt_tokens") or 0) + int(self.row.get("completion_tokens") or 0)


@dataclass
class Layer:
    turn: int
    layer: int
    answers: list[Step] = field(default_factory=list)  # proposals side by side
    readers: list[Step] = field(default_factory=list)  # aggregate, synthesis, moderator
    others: list[Step] = field(default_factory=list)  # any other kind (e.g. verification steps)
    inputs: list[Step] = field(default_factory=list)  # what the readers were shown (the layer before)

    @property
    def latency(self) -> float:
        """The layer's wall time: its calls run at once, so the slowest of each group."""
        return max((s.row.get("latency_s") or 0.0 for s in self.answers), default=0.0) + max(
            (s.row.get("latency_s") or 0.0 for s in self.readers + self.others), default=0.0
        )


@dataclass
class Mixture:
    layers: list[Layer]
    tokens: dict[str, int]
    cost: float | None
    latency: float
    calls: int
    cached: int


def build_mixture(steps: list[dict[str, Any]], manifest: dict[str, Any]) -> Mixture:
    """The steps of one prompt's SFT stage, laid out by turn and layer (see the module docstring)."""
    prices = Prices(manifest)
    gates = _gates(manifest)
    ordered = sorted(steps, key=lambda s: (s.get("turn") or 0, s.get("layer") or 0,
                                           s.get("kind") not in PROPOSALS, s.get("index") or 0))  # fmt: skip
    layers: list[Layer] = []
    for row in ordered:
        turn, number = row.get("turn") or 0, row.get("layer") or 0
        if not layers or (layers[-1].turn, layers[-1].layer) != (turn, number):
            layers.append(Layer(turn, number))
        step = Step(row, row.get("agent") or row.get("model") or "?", _status(row), prices.cost(row), trace_meta(row))
        kind = row.get("kind")
        (layers[-1].answers if kind in PROPOSALS else layers[-1].readers if kind in READERS else layers[-1].others
         ).append(step)  # fmt: skip
    for i, layer in enumerate(layers):
        layer.inputs = _inputs(layers, i)
        texts = [s.row.get("text") or "" for s in layer.inputs]
        for step in layer.readers:
            if step.row.get("kind") in ("aggregate", "synthesis"):
                step.segments = borrowed(step.row.get("text") or "", texts)
                step.shares = share_of(step.segments)
                step.gate = _gate(step, texts, gates)
    rows = [s.row for layer in layers for s in layer.answers + layer.readers + layer.others]
    costs = [prices.cost(r) for r in rows]
    return Mixture(
        layers,
        {"prompt": sum(int(r.get("prompt_tokens") or 0) for r in rows),
         "completion": sum(int(r.get("completion_tokens") or 0) for r in rows)},
        None if all(c is None for c in costs) else sum(c or 0.0 for c in costs),
        sum(layer.latency for layer in layers),
        len(rows),
        sum(1 for r in rows if r.get("cached")),
    )  # fmt: skip


def _inputs(layers: list[Layer], i: int) -> list[Step]:
    """What layer i's readers were shown: its own kept answers when it has any (a moderator beside the
    answers it picks from); else the running synthesis of the layer just before (Self-MoA-Seq), then
    the kept answers of the nearest layer before it in the same turn that has any (MoA's proposals of
    the previous layer; Self-MoA-Seq's samples, of which each step was shown a window)."""
    layer = layers[i]
    kept = lambda steps: [s for s in steps if s.status == "selected"]  # noqa: E731
    if layer.answers:
        return kept(layer.answers)
    before = layers[i - 1] if i and layers[i - 1].turn == layer.turn else None
    synthesis = [s for s in kept(before.readers) if s.row.get("kind") == "synthesis"] if before else []
    for earlier in reversed(layers[:i]):
        if earlier.turn != layer.turn:
            break
        if kept(earlier.answers):
            return synthesis + kept(earlier.answers)
    return synthesis


def _status(row: dict[str, Any]) -> str:
    if row.get("finish_reason") == "error":
        return "failed"
    if row.get("finish_reason") == "length" and not row.get("selected"):
        return "cut at max_tokens"
    if not (row.get("text") or "").strip() and row.get("kind") != "moderator":
        return "empty"
    return "selected" if row.get("selected") else "not selected"


def _gates(manifest: dict[str, Any]) -> Any:
    from moaa.config import QualityConfig

    raw = (((manifest.get("config") or {}).get("sft")) or {}).get("quality") or {}
    try:
        return QualityConfig.model_validate(raw)
    except ValueError:  # a version written by another moaa: its gates as they are now
        return QualityConfig()


def _gate(step: Step, inputs: list[str], gates: Any) -> str:
    from moaa.engine.quality import aggregate_problem

    if step.status in ("failed", "cut at max_tokens", "empty"):
        return step.status
    if not (gates.scaffolding or gates.verbatim_copy):
        return "quality gates off"
    _, problem = aggregate_problem(step.row.get("text") or "", inputs, gates)
    if problem:
        return f"rejected by the quality gate: {problem}"
    return "passed the quality gates" if step.status == "selected" else "not kept"


class Prices:
    """Dollars per call from the version's config: the endpoint of the step's agent (by name), else the
    one endpoint that serves the step's model; None when no price is known."""

    def __init__(self, manifest: dict[str, Any]):
        config = manifest.get("config") or {}
        self.endpoints = config.get("endpoints") or {}
        served = manifest.get("endpoints") or {}
        self.by_model: dict[str, list[str]] = {}
        for name, info in served.items():
            self.by_model.setdefault(str(info.get("model")), []).append(name)
        self.by_agent: dict[str, str] = {}
        for agent in _agents(config):
            if agent.get("name") and agent.get("endpoint"):
                self.by_agent[agent["name"]] = agent["endpoint"]

    def endpoint(self, row: dict[str, Any]) -> str | None:
        if row.get("agent") in self.by_agent:
            return self.by_agent[row["agent"]]
        found = self.by_model.get(str(row.get("model")), [])
        return found[0] if len(found) == 1 else None

    def cost(self, row: dict[str, Any]) -> float | None:
        endpoint = self.endpoints.get(self.endpoint(row) or "")
        if not endpoint:
            return None
        price_in, price_out = endpoint.get("price_input_per_mtok"), endpoint.get("price_output_per_mtok")
        if price_in is None and price_out is None:
            return 0.0 if endpoint.get("local") else None
        tokens_in, tokens_out = int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0)
        return (tokens_in * float(price_in or 0) + tokens_out * float(price_out or 0)) / 1e6


def _agents(config: dict[str, Any]) -> list[dict[str, Any]]:
    sft, pref = config.get("sft") or {}, config.get("preference") or {}
    scorer = pref.get("scorer") or {}
    found = [*(sft.get("proposers") or []), sft.get("aggregator"), sft.get("moderator"), pref.get("policy"),
             *(pref.get("candidates") or []), *(scorer.get("judges") or []), scorer.get("aggregator")]  # fmt: skip
    return [a for a in found if isinstance(a, dict)]
