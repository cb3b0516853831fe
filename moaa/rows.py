"""Row types named once. Column names match what TRL reads (`messages`; `prompt`/`chosen`/`rejected`).

- Prompt: an instruction or conversation to answer; assistant turns in it are regenerated. It may
  carry a Reference: what its final answer can be checked against (moaa.verify).
- SFT row: prompt_id, messages (the conversation with the final answers as assistant turns),
  source, category, method, models, verification (the final answer's verdict, or None),
  reference (the prompt's Reference as JSON text, or None: what RLVR-style training checks against).
- Trace row: every intermediate answer or verdict (see TraceStep).
- Failure row: prompt_id, stage, reason, error, transient (a re-run asks the prompt again).
- DPO row: prompt_id, prompt (messages), chosen / rejected (one assistant message each),
  score_chosen, score_rejected, chosen_model, rejected_model, verification ({chosen, rejected}
  verdicts, or None), reference (as the SFT row's).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]


def prompt_id_of(messages: list[Message]) -> str:
    """A stable id: hash of the conversation's roles and whitespace-normalised texts."""
    canon = [[m["role"], " ".join(str(m.get("content", "")).split())] for m in messages]
    return hashlib.sha256(json.dumps(canon, ensure_ascii=False).encode()).hexdigest()[:16]


TEST_LANGUAGES = ("python", "javascript")


@dataclass(frozen=True)
class Reference:
    """What the final answer to a prompt is checked against (moaa.verify); any subset of the fields.

    answer: the final answer (a number, a fraction, LaTeX; GSM8K's `... #### 72` form accepted).
    tests: test code the answer's fenced code must pass, one test a string (asserts), in `language`.
    instructions / kwargs: verifiable instructions in IFEval/IFBench form (ids and their arguments).
    sql / schema / rows / ordered: the answer's query is run on SQLite after `schema` (a script that
    creates and fills the tables); its result is compared with the rows of the reference query
    `sql`, or with `rows`; in order when `ordered` (unset: when `sql` has an ORDER BY).
    data: other columns of the row, for a user's own check (verify.check).

    Not part of the prompt id: the id names the conversation, so a corrected reference re-checks
    the same (cached) answers instead of asking new ones.
    """

    answer: str | None = None
    tests: tuple[str, ...] = ()
    language: str = "python"
    instructions: tuple[str, ...] = ()
    kwargs: tuple[dict[str, Any], ...] = ()
    sql: str | None = None
    schema: str | None = None
    rows: tuple[tuple[Any, ...], ...] | None = None
    ordered: bool | None = None
    data: dict[str, Any] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The checks this reference makes: answer, tests, constraints, sql."""
        found = (
            ("answer", self.answer is not None),
            ("tests", bool(self.tests)),
            ("constraints", bool(self.instructions)),
            ("sql", self.sql is not None or self.rows is not None),
        )
        return tuple(name for name, present in found if present)

    def to_json(self) -> str:
        """The set fields as JSON text (the rows' `reference` column)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def to_dict(self) -> dict[str, Any]:
        """The set fields only (what a shard file and a trace keep)."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if value is None or value == () or (key == "language" and value == "python"):
                continue
            out[key] = [list(r) for r in value] if key == "rows" else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        """A Reference from plain data; ValueError("field: what is wrong") for a malformed one."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"reference: unknown field(s) {', '.join(unknown)} (known: {', '.join(cls.__dataclass_fields__)})"
            )
        answer = data.get("answer")
        if isinstance(answer, bool) or (answer is not None and not isinstance(answer, (str, int, float))):
            raise ValueError(f"answer: a final answer is text or a number, got {type(answer).__name__}")
        answer = None if answer is None or not str(answer).strip() else str(answer).strip()
        tests = _texts(data.get("tests"), "tests")
        language = str(data.get("language") or "python").lower()
        language = {"js": "javascript", "node": "javascript", "py": "python"}.get(language, language)
        if tests and language not in TEST_LANGUAGES:
            raise ValueError(f"language: tests run in {' or '.join(TEST_LANGUAGES)}, not {language!r}")
        instructions = _texts(data.get("instructions"), "instructions")
        kwargs = _kwargs(data.get("kwargs"), len(instructions))
        sql, schema = _text(data.get("sql"), "sql"), _text(data.get("schema"), "schema")
        rows = _rows(data.get("rows"))
        if (sql is not None or rows is not None) and schema is None:
            raise ValueError("schema: an SQL reference needs the script that creates and fills its tables")
        ordered = data.get("ordered")
        if ordered is not None and not isinstance(ordered, bool):
            raise ValueError(f"ordered: true or false, got {ordered!r}")
        extra = data.get("data")
        if extra is not None and not isinstance(extra, dict):
            raise ValueError(f"data: an object of named values, got {type(extra).__name__}")
        return cls(answer, tests, language, instructions, kwargs, sql, schema, rows, ordered, extra)


def _text(value: Any, field: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: text expected, got {type(value).__name__}")
    return value


def _texts(value: Any, field: str) -> tuple[str, ...]:
    """A string or a list of strings (JSON text of a list, as CSV cells hold it, is read as one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return (value,)
        else:
            return (value,) if stripped else ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{field}: a string or a list of strings expected")
    return tuple(v for v in value if v.strip())


def _kwargs(value: Any, count: int) -> tuple[dict[str, Any], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("kwargs: text that is not a JSON list of objects") from None
    if value is None:
        value = [{}] * count
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) or v is None for v in value):
        raise ValueError("kwargs: a list of objects (one per instruction id) expected")
    if len(value) != count:
        raise ValueError(f"kwargs: {len(value)} objects for {count} instruction ids; give one per id")
    return tuple(
        {k: v for k, v in (v or {}).items() if v is not None} for v in value
    )  # IFEval fills unused keys with null


def _rows(value: Any) -> tuple[tuple[Any, ...], ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, (list, tuple)) for r in value):
        raise ValueError("rows: a list of rows, each a list of values, expected")
    return tuple(tuple(r) for r in value)


@dataclass
class Prompt:
    prompt_id: str
    messages: list[Message]
    source: str = ""
    category: str | None = None
    reference: Reference | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reference, dict):  # read back from a shard file
            self.reference = Reference.from_dict(self.reference)

    @classmethod
    def from_messages(cls, messages: list[Message], source: str = "", category: str | None = None) -> Prompt:
        return cls(prompt_id_of(messages), messages, source, category)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a shard file; `reference` only when set, so prompts without one are written
        as they always were."""
        out = {"prompt_id": self.prompt_id, "messages": self.messages, "source": self.source, "category": self.category}
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
        return out


@dataclass
class TraceStep:
    """One intermediate call of a prompt: who said what, at which layer/round, and its cost."""

    prompt_id: str
    stage: str  # "sft", "candidates", "judge", ...
    kind: str  # "proposal", "aggregate", "moderator", "sample", "verdict", ...
    text: str
    agent: str = ""
    model: str = ""
    role: str = ""
    turn: int = 0  # which assistant turn of the conversation
    layer: int = 0  # MoA layer / SMoA round / Self-MoA-Seq step
    index: int = 0  # position within the layer
    selected: bool = True  # forwarded to the next layer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = ""
    cached: bool = False
    score: float | None = None
    meta: str = ""  # JSON text: rationales, parsed verdicts, moderator output...

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # flat fields: a shallow copy equals asdict, at a tenth of the cost (hot path)


# Causes no re-ask can fix: the prompt itself, a 400 for its request, a content filter.
PERMANENT_REASONS = ("no_user_turn", "bad_message", "content_filter")


def is_transient(reason: str, error: str = "") -> bool:
    """Whether a failure may pass when asked again: connection, timeout, 5xx, 429, empty or truncated
    answers are; a 400 (`bad_request`), a content filter and a malformed prompt are not."""
    if reason in PERMANENT_REASONS or error.startswith(("bad_request", "content_filter")):
        return False
    return "HTTP 400" not in error and "content filter" not in error


def failure_is_transient(row: dict[str, Any]) -> bool:
    """A written failure row's class (rows written before the column existed are classified now)."""
    value = row.get("transient")
    return bool(value) if value is not None else is_transient(row.get("reason", ""), row.get("error", ""))


@dataclass
class Failure:
    prompt_id: str
    stage: str
    reason: str  # short machine-friendly: "proposers_failed", "aggregator_failed", "truncated", ...
    error: str = ""
    transient: bool | None = None  # None: classified from reason and error (is_transient)

    def __post_init__(self) -> None:
        if self.transient is None:
            self.transient = is_transient(self.reason, self.error)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTRow:
    prompt_id: str
    messages: list[Message]
    source: str
    method: str
    models: list[str] = field(default_factory=list)
    category: str | None = None
    verification: dict[str, Any] | None = None  # moaa.verify.Verdict.column(): status, reason, score, checks, answer
    reference: str | None = None  # Reference.to_json()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreferenceRow:
    prompt_id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    score_chosen: float
    score_rejected: float
    chosen_model: str
    rejected_model: str
    chosen_agent: str = "policy"  # the pool label of the agent that wrote chosen (moaa.config.pools)
    rejected_agent: str = "policy"
    verification: dict[str, Any] | None = None  # {"chosen": Verdict.column(), "rejected": ...}
    reference: str | None = None  # Reference.to_json()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trace_meta(step: dict[str, Any]) -> dict[str, Any]:
    """A trace row's `meta` JSON as a dict ({} when absent, unreadable or not an object)."""
    try:
        meta = json.loads(step.get("meta") or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}
