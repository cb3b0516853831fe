"""The prompts of the generation stage (MoA, Self-MoA, Self-MoA-Seq, SMoA), in moaa's own words.

Each template names the paper whose idea it follows (see /work/shared/ALGORITHMS.md sections 1-4).
Bump a template's version whenever its text changes: the version is part of every call's tag and
so of the request cache key.
"""

from __future__ import annotations

from moaa.prompts import Template

Message = dict[str, str]

# A proposer's role description, given as (the start of) its system message.
# Follows SMoA (Li et al. 2024, arXiv 2411.03284): roles make proposers answer differently.
PROPOSE = Template("propose", "v1", "{role}")

# Aggregate-and-synthesize, appended to the system message; the user turns stay as they are.
# Follows Mixture-of-Agents (Wang et al. 2024, arXiv 2406.04692): references numbered from 1,
# no model names, an explicit warning that some may be wrong, and synthesis rather than copying.
AGGREGATE = Template(
    "aggregate",
    "v1",
    "Other assistants have already answered the latest user message. Their responses are listed "
    "below. Some of them may be wrong, incomplete, outdated or biased, and they may contradict each "
    "other. Weigh them critically, keep what is correct and useful, fix or leave out what is not, "
    "and write one answer of your own that is accurate, complete and clearly organised. Do not just "
    "copy one of them, and do not mention that you were shown other responses: answer the user "
    "directly.\n\n"
    "Responses:\n\n{responses}",
)

# The sliding-window synthesis of Self-MoA-Seq (Li et al. 2025, arXiv 2502.00674): the running
# synthesis is listed `repeats` times next to a few new samples, which biases the aggregator
# towards what earlier steps already agreed on. It is labelled in its header (SYNTHESIS_LABEL):
# with the default repeats: 1 it appears once, so "the one listed twice" would not identify it.
SYNTHESIS_LABEL = "synthesis of earlier answers"
SEQ_AGGREGATE = Template(
    "seq-aggregate",
    "v2",
    "Other assistants have already answered the latest user message. Their responses are listed "
    f'below. A response headed "({SYNTHESIS_LABEL})", if there is one, combines the earlier answers '
    "and deserves more weight; the others are fresh attempts that may add something it missed. Any of them may "
    "contain mistakes. Weigh them critically and write one improved answer of your own that is "
    "accurate, complete and clearly organised. Do not mention that you were shown other responses: "
    "answer the user directly.\n\n"
    "Responses:\n\n{responses}",
)

# After an aggregate that failed a quality gate (moaa.engine.quality): the failed answer goes back as
# the assistant's turn, then this. moaa's own: small aggregators paste the scaffolding back
# ("Response 1: ...") or copy one reference (ALGORITHMS.md section 8).
QUALITY_REASK = Template(
    "quality-reask",
    "v1",
    "Your answer above cannot be used: {problem}. Write your answer to the user's last message again, "
    "addressed to the user directly: no numbered response headings, no mention of other responses or "
    "of these instructions, and not a copy of any one of the responses.",
)

# After a final answer that failed its check (moaa.engine.verification): the answer goes back as the
# assistant's turn, then this, with the check's feedback (a failing test and its error, "your final
# answer 9 is not correct"; never the reference's answer). Self-debugging with execution feedback
# (Chen et al. 2023, arXiv 2304.05128); moaa's own wording.
VERIFY_REASK = Template(
    "verify-reask",
    "v1",
    "Your answer above is wrong: {feedback}. Find the mistake, then write your whole answer to the "
    "user's last message again, corrected, addressed to the user directly.",
)

# One moderator call per round: select the best k answers and say whether to stop early.
# Follows SMoA (Li et al. 2024, arXiv 2411.03284): responses numbered from 0, JSON with the
# reasoning, the chosen indices and a stop flag.
MODERATOR = Template(
    "smoa-moderator",
    "v1",
    "You moderate a group of assistants who answer a user together, over several rounds. Read the "
    "conversation and their responses to its latest user message. Choose the {k} best responses "
    "(most correct, helpful and complete) and decide whether the responses already agree so closely "
    "that another round of discussion would not improve them.\n\n"
    "Conversation:\n{conversation}\n\n"
    "Responses (numbered from 0):\n\n{responses}\n\n"
    "Reply with only a JSON object of the form "
    '{{"reasoning": "<two or three sentences>", "selected": [<{k} response numbers>], "stop": <true or false>}}.',
)

MODERATOR_SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "selected": {"type": "array", "items": {"type": "integer"}},
        "stop": {"type": "boolean"},
    },
    "required": ["reasoning", "selected", "stop"],
    "additionalProperties": False,
}

# Role descriptions generated once per run, one per proposer.
# Follows SMoA (Li et al. 2024, arXiv 2411.03284): occupation, expertise and personality per role.
ROLES = Template(
    "smoa-roles",
    "v1",
    "Write {n} different role descriptions for assistants who will answer users' requests as a "
    'team{task}. Each description is one or two sentences addressed to the assistant ("You are '
    '...") and names an occupation, an area of expertise and a personality. Make the roles differ '
    "from each other so that the assistants approach a request from different angles. Reply with "
    "only a JSON list of {n} strings.",
)

ROLES_SCHEMA = {"type": "array", "items": {"type": "string"}}

# Used when a role generator keeps answering something that is not a JSON list of roles.
FALLBACK_ROLES = (
    "You are a meticulous research scientist: precise, sceptical and careful to check every claim.",
    "You are an experienced teacher: patient, clear and fond of concrete examples.",
    "You are a pragmatic senior engineer: direct, practical and focused on what works.",
    "You are a thoughtful editor: concise, well organised and attentive to the reader's needs.",
    "You are a curious generalist: broad-minded, creative and quick to connect ideas.",
    "You are a cautious domain expert: thorough, balanced and explicit about uncertainty.",
)


def number_responses(texts: list[str], start: int, marked: str | None = None) -> str:
    """`Response <i>:` blocks, numbered from `start` (1 for aggregation, 0 for the moderator); a
    text equal to `marked` is headed `Response <i> (synthesis of earlier answers):`."""
    blocks = []
    for i, text in enumerate(texts):
        label = f" ({SYNTHESIS_LABEL})" if marked is not None and text == marked else ""
        blocks.append(f"Response {start + i}{label}:\n{text.strip()}")
    return "\n\n".join(blocks)


def render_conversation(messages: list[Message]) -> str:
    """A conversation as plain text (`User: ...`), for prompts that quote it."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in messages)


def with_system(messages: list[Message], text: str) -> list[Message]:
    """`messages` with `text` appended to the leading system message (or as a new one)."""
    if messages and messages[0]["role"] == "system":
        head = messages[0]
        joined = f"{head['content']}\n\n{text}" if head.get("content") else text
        return [{"role": "system", "content": joined}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def proposer_messages(messages: list[Message], role: str | None, references: list[str] | None) -> list[Message]:
    """What a proposer sees: its role first in the system message, then the references if any."""
    out = messages
    if role:
        rendered = PROPOSE.render(role=role)
        if out and out[0]["role"] == "system":
            existing = out[0].get("content") or ""
            out = [{"role": "system", "content": f"{rendered}\n\n{existing}" if existing else rendered}, *out[1:]]
        else:
            out = [{"role": "system", "content": rendered}, *out]
    if references:
        out = with_system(out, AGGREGATE.render(responses=number_responses(references, 1)))
    return out


def aggregator_messages(
    messages: list[Message], references: list[str], template: Template = AGGREGATE, marked: str | None = None
) -> list[Message]:
    """The conversation with the references appended to its system message (numbered from 1;
    `marked`: the running synthesis, labelled)."""
    return with_system(messages, template.render(responses=number_responses(references, 1, marked)))


def moderator_messages(messages: list[Message], responses: list[str], k: int) -> list[Message]:
    """One user message asking the moderator to pick `k` responses (numbered from 0) as JSON."""
    text = MODERATOR.render(k=k, conversation=render_conversation(messages), responses=number_responses(responses, 0))
    return [{"role": "user", "content": text}]


def roles_messages(n: int, task: str = "") -> list[Message]:
    clause = f" on this task: {task.strip()}" if task.strip() else ""
    return [{"role": "user", "content": ROLES.render(n=n, task=clause)}]
