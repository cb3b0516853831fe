"""The prompts of the instruction stage (moaa.instructions): writing new tasks from seed tasks, and the
zero-shot question each new task becomes for its answerers.

Follows Ensemble-Instruct (Lee et al. 2023, "Ensemble-Instruct: Instruction Tuning Data Generation with
a Heterogeneous Mixture of LMs", EMNLP Findings; code: github.com/IBM/ensemble-instruct, Apache-2.0):
its categorised, simplified in-context templates (ensemble_instruct/templates/instance_template.py:
`input_output_template` for tasks that need an input, `output_template` for those that do not), each
example an `instruction:` / `input:` / `output:` block ended by `|EoS|`, and its two pipelines, one per
category. That code asks a base model to continue a numbered list ("Come up with a series of tasks",
gen_instructions.py, from Self-Instruct, Wang et al. 2023) and then, in a second call, for each new
instruction's instance; moaa asks a chat model for both at once, in moaa's own words, so a round is
one call per writer. The writer's own output is one of the answers the consensus compares, as the
paper's instance output is (ensemble_output.py).

Bump a template's version whenever its text changes: it is part of every call's tag, so of the
request cache key.
"""

from __future__ import annotations

from moaa.prompts import Template

EOS = "|EoS|"  # the end of one task in the examples and in a writer's reply (the paper's marker)

# A writer's call for tasks that need an input (the paper's input-output pipeline).
WRITE_WITH_INPUT = Template(
    "write-with-input",
    "v2",
    "You write tasks for training an AI assistant. Below are example tasks. Each has an instruction, an "
    "input that the instruction is carried out on (a text, a list, a table, code, numbers), and a "
    "correct output.\n\n"
    "{examples}\n\n"
    "Write {count} new tasks in exactly this format, each ended by a line {eos}. Never copy or reword an "
    "example: each new task is on a topic none of the examples mentions, and differs from the others in topic "
    "and in kind (extract, classify, rewrite, compute, "
    "compare, fix, summarise...). Every input must be written out in full: no task may need an image, a "
    "file, a link or anything else a text-only assistant cannot read. Outputs must be correct and "
    "complete. Write nothing before the first task or after the last.",
)

# A writer's call for tasks that need no input (the paper's output-only pipeline).
WRITE_NO_INPUT = Template(
    "write-no-input",
    "v2",
    "You write tasks for training an AI assistant. Below are example tasks. Each is an instruction that "
    "stands on its own (no further input needed) and a correct output.\n\n"
    "{examples}\n\n"
    "Write {count} new tasks in exactly this format, each ended by a line {eos}. Never copy or reword an "
    "example: each new task is on a topic none of the examples mentions, and differs from the others in topic "
    "and in kind (advice, explanation, brainstorming, "
    "writing, reasoning, coding, maths...). No task may need an image, a file, a link or anything else a "
    "text-only assistant cannot read. Outputs must be correct and complete. Write nothing before the "
    "first task or after the last.",
)

# A writer's call for tasks with a checkable final answer (arithmetic, word problems, conversions): moaa's
# own family, beside the paper's two, so synthesized prompts can carry a reference the verifiers check
# (moaa.verify's `answer` check: Tulu 3's verifiable answers, ALGORITHMS.md section 10). The writer's
# `answer:` becomes the task's reference only if the answerers' consensus reaches it too.
WRITE_WITH_ANSWER = Template(
    "write-with-answer",
    "v2",
    "You write tasks for training an AI assistant. Below are example tasks. Each is a problem with one "
    "correct final answer (a number or a short expression), an input when the problem needs one, a worked "
    "output, and the final answer alone on its `answer:` line.\n\n"
    "{examples}\n\n"
    "Write {count} new tasks in exactly this format, each ended by a line {eos}. Never copy or reword an "
    "example: each new task is on a topic none of the examples mentions, and differs from the others "
    "(arithmetic, percentages, rates, units, counting, simple algebra...). "
    "Work each one out carefully: its answer line must be right. Write nothing before the first task or "
    "after the last.",
)

# A writer's call for Python programming tasks with tests: moaa's own family, beside the with-answer one, so
# synthesized prompts can carry a reference the verifiers run (moaa.verify's `tests` check, in the sandbox:
# MBPP's form, a task described in words, one function, and a list of `assert` lines; Austin et al. 2021,
# "Program Synthesis with Large Language Models"; Tulu 3's verifiable code, ALGORITHMS.md section 10). The
# answerers see the instruction and the signature, never the tests; the tests become the task's reference only
# if the answerers' consensus answer passes them (moaa.instructions.writer_replies reads the format strictly).
WRITE_WITH_TESTS = Template(
    "write-with-tests",
    "v1",
    "You write tasks for training an AI assistant. Below are example tasks. Each asks for one self-contained "
    "Python function (standard library only; no input(), printing, files or network): an instruction that says "
    "what the function must do, its `signature:` on one line (def, the name, typed parameters, the return "
    "type), a correct solution as the output in a ```python block, and under `tests:` a ```python block of 3 "
    "to 6 tests, one `assert` a line, each calling the function and comparing its result with the right "
    "value.\n\n"
    "{examples}\n\n"
    "Write {count} new tasks in exactly this format, each ended by a line {eos}. Never copy or reword an "
    "example: each new task is on a topic none of the examples mentions, and differs from the others (strings, "
    "lists, dictionaries, numbers, dates, parsing, searching, sorting...). The instruction must not show the "
    "tests. Check every test against your solution: each must pass. Write nothing before the first task or "
    "after the last.",
)

# What a with-tests task's instruction gets appended for its answerers (and the SFT stage): the function's
# signature, so the tests can call it, and the fenced block moaa.verify's `tests` check runs. moaa's own.
FUNCTION_TASK = Template(
    "function-task",
    "v1",
    "Write it as one Python function with the signature `{signature}`, in a ```python code block.",
)

# Where the endpoint takes a JSON schema (moaa.models.agent_calls.json_format; llama.cpp makes it a grammar),
# the writer answers as JSON instead of `|EoS|` blocks: the embedded 0.5B model, asked for blocks, echoed
# `|EoS|` markers and the examples' own instructions. moaa's own addition.
WRITE_AS_JSON = Template(
    "write-as-json",
    "v1",
    'Answer with JSON only: {{"tasks": [{{{fields}}}, ...]}}, one object per new task.',
)


def task_fields(kind: str) -> list[str]:
    """The fields of a task of `kind` (KINDS) as a writer writes it."""
    if kind == "with-tests":
        return ["instruction", "signature", "output", "tests"]
    return ["instruction", "input", "output", *(["answer"] if kind == "with-answer" else [])]


def tasks_schema(kind: str, count: int) -> dict:
    """The JSON schema of a writer's reply of up to `count` tasks of `kind`."""
    keys = task_fields(kind)
    task = {
        "type": "object",
        "properties": {key: {"type": "string"} for key in keys},
        "required": keys,
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"tasks": {"type": "array", "items": task, "minItems": 1, "maxItems": count}},
        "required": ["tasks"],
        "additionalProperties": False,
    }


# The question a new task becomes: what its answerers are asked zero-shot (the paper's output
# generation, gen_output_zeroshot.py) and what the SFT stage answers. No template text of moaa's own:
# the instruction, then its input.
TASK_PROMPT = Template("task", "v1", "{instruction}\n\n{input}")


KINDS = ("with-input", "no-input", "with-answer", "with-tests")  # a call's kind of task: its template, examples


def write_template(kind: str) -> Template:
    return {"with-input": WRITE_WITH_INPUT, "no-input": WRITE_NO_INPUT, "with-answer": WRITE_WITH_ANSWER,
            "with-tests": WRITE_WITH_TESTS}[kind]  # fmt: skip


def example_block(instruction: str, input_text: str | None, output: str, answer: str | None = None) -> str:
    """One example task as the writers see it (and as they are asked to write theirs)."""
    lines = [f"instruction: {instruction.strip()}"]
    if input_text is not None:
        lines.append(f"input: {input_text.strip()}")
    lines.append(f"output: {output.strip()}")
    if answer is not None:
        lines.append(f"answer: {answer.strip()}")
    lines.append(EOS)
    return "\n".join(lines)


def function_example_block(instruction: str, signature: str, output: str, tests: list[str] | tuple[str, ...]) -> str:
    """One example with-tests task as the writers see it: its solution and its tests in ```python blocks."""
    lines = [
        f"instruction: {instruction.strip()}",
        f"signature: {signature.strip()}",
        f"output:\n```python\n{output.strip()}\n```",
        "tests:\n```python\n" + "\n".join(test.strip() for test in tests) + "\n```",
        EOS,
    ]
    return "\n".join(lines)


def function_prompt(instruction: str, signature: str) -> str:
    """A with-tests task's instruction as its answerers read it: the instruction, then its signature."""
    return f"{instruction.strip()} {FUNCTION_TASK.render(signature=signature)}"


def write_messages(kind: str, examples: list[str], count: int, as_json: bool = False) -> list[dict[str, str]]:
    """The writer's messages for a call of `kind` (KINDS): one user turn with the examples (example_block
    texts); `as_json`: the reply is asked for as JSON (tasks_schema), not as blocks."""
    text = write_template(kind).render(examples="\n\n".join(examples), count=count, eos=EOS)
    if as_json:
        text += "\n\n" + WRITE_AS_JSON.render(fields=", ".join(f'"{key}": "..."' for key in task_fields(kind)))
    return [{"role": "user", "content": text}]


def task_prompt(instruction: str, input_text: str) -> str:
    """The user message of a task: its instruction, then its input (when it has one)."""
    if not input_text.strip():
        return instruction.strip()
    return TASK_PROMPT.render(instruction=instruction.strip(), input=input_text.strip())
