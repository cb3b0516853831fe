"""Instruction synthesis in rounds: writers write tasks from seed tasks, answerers answer them, the
answers' consensus decides which tasks are kept (Ensemble-Instruct; moaa.prompts.instructions).

A round: each writer gets one call (tasks with a final answer, Python functions with tests, with an
input or without, drawn by the round's seeded RNG with `checkable_share`, `code_share` and
`input_share`; `examples` seed tasks of that kind shown; the agents' roles are not sent), and its
reply is parsed into tasks (moaa.instructions.writer_replies: a block without `instruction:` is
skipped; a reply without any is an unparsable drop; the last task of a reply cut at max_tokens is
left out). Each task passes the filters in this order, every drop named with its
reason: too_short / too_long (3 words or fewer, more than 150: Self-Instruct's and
Ensemble-Instruct's gen_instructions.py), needs_non_text (asks for an image, graph, picture, file,
map, a drawing or a plot: the same list), malformed (starts with punctuation or a non-ASCII
character: the same), missing_input / missing_answer (an input or a final answer was asked for and
none written), unparsable_tests (a with-tests task whose signature or tests are not in the asked
format: moaa.instructions.writer_replies), similar_to_seed / similar_to_earlier (Rouge-L >=
max_similarity with a seed's instruction, or with an instruction written earlier: this batch's or an
earlier batch's, Self-Instruct's rule). A task without a final answer that passed may then get one verifiable IFEval
constraint appended (`constraint_share`; moaa.instructions.verifiable), its reference the constraint,
so the answers are made, agreed on and checked with it (the writer's own output, written without it,
is then left out). Then every answerer answers the task zero-shot; the writer's own output and
theirs are compared (moaa.instructions.consensus): too_few_answers (fewer than two), disagreement
(agreement below the threshold), reference_disputed (a with-answer task whose consensus answer
fails moaa.verify's answer check against the writer's answer, or a with-tests task whose consensus
answer fails the writer's tests, run in moaa.verify's sandbox), and, once `n` were kept, beyond_n.
A writer call that fails is a writer_failed drop (transient: a re-run asks it again).

Everything is decided in a fixed order from seeded RNGs and the answers, so a re-run with the
request cache replays a finished batch without a call, and a killed one asks again only what was in
flight or answered within the cache's last uncommitted batch (moaa.models.cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moaa.config import AgentConfig, InstructionsConfig
from moaa.instructions.consensus import Embedder, find_consensus
from moaa.instructions.diversity import diversity
from moaa.instructions.rouge import rouge_l
from moaa.instructions.seeds import SeedTask
from moaa.instructions.verifiable import Constraint, draw_constraint
from moaa.instructions.writer_replies import FunctionSpec, parse_function_tasks, parse_tasks
from moaa.models.agent_calls import derive_seed, json_format, sampling_for
from moaa.models.client import CallError, ChatClient
from moaa.prompts.instructions import (
    EOS,
    TASK_PROMPT,
    WRITE_AS_JSON,
    example_block,
    function_example_block,
    function_prompt,
    task_prompt,
    tasks_schema,
    write_messages,
    write_template,
)
from moaa.rows import Failure, Prompt, Reference
from moaa.verify.checks import Verifier

log = logging.getLogger(__name__)

STAGE = "instructions"  # the stage of its drops' failure rows
_NON_TEXT = re.compile(r"\b(image|images|graph|graphs|picture|pictures|file|files|map|maps|draw|plot|go to)\b", re.I)


@dataclass(frozen=True)
class Agent:
    """An agent of the stage with its client: `who` names it in seeds, rows and drops (writer0, answerer1)."""

    who: str
    agent: AgentConfig
    client: ChatClient


@dataclass
class Task:
    """A task as a writer wrote it, with where it came from."""

    instruction: str
    input: str
    output: str
    kind: str  # moaa.prompts.instructions.KINDS: what its writer was asked for
    seeds: list[str]
    round: int
    writer: Agent
    answer: str | None = None  # with-answer: the final answer the writer states (the reference, once agreed)
    place: tuple[int, int] = (0, 0)  # (batch, position in its writer's reply)
    constraint: Constraint | None = None  # a verifiable constraint appended (instructions.constraint_share)
    function: FunctionSpec | None = None  # with-tests: the function asked for and its tests (the reference)
    unread: str = ""  # with-tests: why its signature or tests did not parse (then `function` is None)

    @property
    def prompt(self) -> str:
        instruction = f"{self.instruction} {self.constraint.text}" if self.constraint else self.instruction
        if self.function is not None:  # the signature, never the tests
            instruction = function_prompt(self.instruction, self.function.signature)
        return task_prompt(instruction, self.input)

    @property
    def prompt_id(self) -> str:
        return "ins-" + hashlib.blake2b(self.prompt.encode(), digest_size=8).hexdigest()

    @property
    def drop_id(self) -> str:
        """The id of its drop: the prompt's id and where it was written (the same text may be written twice)."""
        return f"{self.prompt_id}-b{self.place[0]}r{self.round}-{self.writer.who}-{self.place[1]}"

    @property
    def reference(self) -> Reference | None:
        if self.constraint is not None:
            return Reference(instructions=(self.constraint.id,), kwargs=(self.constraint.kwargs,))
        if self.function is not None:
            return Reference(tests=self.function.tests, language="python")
        return Reference(answer=self.answer) if self.answer else None


@dataclass
class Outcome:
    """What a batch made: kept tasks as `prompts` rows, named drops as failure rows, and its counts."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    written: int = 0  # tasks parsed from the writers' replies
    answered: int = 0  # tasks that reached the consensus

    def drop(self, prompt_id: str, reason: str, detail: str, transient: bool = False) -> None:
        self.drops.append(Failure(prompt_id, STAGE, reason, detail, transient=transient).to_dict())

    def counts(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for row in self.drops:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        agreements = [row["agreement"] for row in self.kept]
        return {
            "rounds": self.rounds, "written": self.written, "answered": self.answered, "kept": len(self.kept),
            "dropped": dict(sorted(reasons.items())),
            "mean_agreement": round(sum(agreements) / len(agreements), 4) if agreements else None,
            "diversity": diversity([row["instruction"] for row in self.kept]),
        }  # fmt: skip


@dataclass
class Synthesis:
    """One batch of the stage: its settings, seed tasks, agents and the instructions it must not repeat."""

    cfg: InstructionsConfig
    seeds: list[SeedTask]
    writers: list[Agent]
    answerers: list[Agent]
    seed: int  # instructions.seed + earlier batches
    batch: int = 0
    earlier: list[str] = field(default_factory=list)  # instructions of earlier batches
    embed: Embedder | None = None
    verifier: Verifier | None = None  # checks a with-answer task's consensus answer against its answer

    async def run(self) -> Outcome:
        """Rounds until `n` tasks are kept or `max_rounds` were written."""
        outcome = Outcome()
        written = list(self.earlier)
        for round_ in range(self.cfg.max_rounds):
            if len(outcome.kept) >= self.cfg.n:
                break
            outcome.rounds += 1
            replies = await asyncio.gather(*(self._write(round_, i, w) for i, w in enumerate(self.writers)))
            fresh: list[Task] = []
            for tasks, failed in replies:
                if failed is not None:
                    outcome.drop(*failed)
                for task in tasks:
                    if self._passes(task, written, outcome):
                        written.append(task.instruction)
                        fresh.append(task)
            answers = await asyncio.gather(*(self._answer(task) for task in fresh))
            for task, texts in zip(fresh, answers, strict=True):
                await self._select(task, texts, outcome)
            log.info(
                "[instructions] round %d: %d tasks written, %d new answered; kept %d of %d",
                round_ + 1, outcome.written, len(fresh), len(outcome.kept), self.cfg.n,
            )  # fmt: skip
        if len(outcome.kept) < self.cfg.n:
            log.warning(
                "instructions: %d of %d kept after %d rounds (instructions.max_rounds); drops: %s",
                len(outcome.kept), self.cfg.n, outcome.rounds, outcome.counts()["dropped"],
            )  # fmt: skip
        return outcome

    async def _write(self, round_: int, index: int, writer: Agent) -> tuple[list[Task], tuple | None]:
        """One writer call: its tasks, parsed, and the drop that names a call without any (else None)."""
        rng = random.Random(f"{self.seed}:{round_}:{index}")
        kind, pool = self._kind(rng)
        shown = rng.sample(pool, min(self.cfg.examples, len(pool)))
        examples = [
            function_example_block(s.instruction, s.signature or "", s.output, s.tests) if kind == "with-tests"
            else example_block(s.instruction, s.input if s.with_input or kind == "with-input" else None, s.output,
                               s.answer if kind == "with-answer" else None)
            for s in shown
        ]  # fmt: skip
        fmt = json_format(writer.client, "tasks", tasks_schema(kind, self.cfg.per_call))
        messages = write_messages(kind, examples, self.cfg.per_call, as_json=fmt is not None)
        tag = write_template(kind).tag(STAGE, "writer")
        if fmt is not None:
            tag += f"+{WRITE_AS_JSON.name}@{WRITE_AS_JSON.version}"
        sampling = sampling_for(writer.agent, writer.agent.seed or derive_seed(self.seed, round_, writer.who))
        try:
            completion = await writer.client.chat(messages, sampling, response_format=fmt, tag=tag)
        except CallError as exc:
            place = f"batch{self.batch}-round{round_}-{writer.who}"
            return [], (place, "writer_failed", f"{writer.who}: {exc}", exc.transient)
        ids = [s.id for s in shown]
        reply = completion.text
        if completion.finish_reasons[0] == "length" and EOS in reply:
            reply = reply[: reply.rindex(EOS)]  # the task cut at max_tokens is no task (its output is partial)
        if kind == "with-tests":
            tasks = [
                Task(instruction, "", output, kind, ids, round_, writer, None, (self.batch, position),
                     function=read if isinstance(read, FunctionSpec) else None,
                     unread="" if isinstance(read, FunctionSpec) else read)
                for position, (instruction, output, read) in enumerate(parse_function_tasks(reply))
            ][: self.cfg.per_call]  # fmt: skip
        else:
            tasks = [
                Task(instruction, input_text, output, kind, ids, round_, writer, answer or None,
                     (self.batch, position))
                for position, (instruction, input_text, output, answer) in enumerate(parse_tasks(reply))
            ][: self.cfg.per_call]  # fmt: skip
        if not tasks:
            place = f"batch{self.batch}-round{round_}-{writer.who}"
            return [], (place, "unparsable", f"{writer.who}'s reply holds no task in the examples' format", False)
        return tasks, None

    def _kind(self, rng: random.Random) -> tuple[str, list[SeedTask]]:
        """The kind of task a call asks for and the seeds it shows: one draw splits the calls into
        with-answer (checkable_share), with-tests (the next code_share) and the rest, then input_share."""
        checkable = [s for s in self.seeds if s.answer is not None]
        with_tests = [s for s in self.seeds if s.tests]
        if checkable or (with_tests and self.cfg.code_share):  # code_share 0: the draws of before it
            draw = rng.random()
            if checkable and draw < self.cfg.checkable_share:
                return "with-answer", checkable
            if with_tests and 0 <= draw - self.cfg.checkable_share < self.cfg.code_share:
                return "with-tests", with_tests
        with_input = rng.random() < self.cfg.input_share
        plain = [s for s in self.seeds if s.answer is None and not s.tests]
        pool = [s for s in plain if s.with_input == with_input]
        if not pool:
            pool = plain or self.seeds
            with_input = pool[0].with_input
        return ("with-input" if with_input else "no-input"), pool

    def _passes(self, task: Task, written: Sequence[str], outcome: Outcome) -> bool:
        """Whether a task passes the filters (module docstring); a drop is named in `outcome`."""
        outcome.written += 1
        reason, detail = task_drop_reason(task.instruction, task.input, task.kind)
        if not reason and task.kind == "with-answer" and not task.answer:
            reason, detail = "missing_answer", "a task with a final answer was asked for, and the writer wrote none"
        if not reason and task.kind == "with-tests" and task.function is None:
            reason, detail = "unparsable_tests", f"the task's function is not in the asked format: {task.unread}"
        if not reason:
            reason, detail = self._similar(task.instruction, written)
        if reason:
            outcome.drop(task.drop_id, reason, f"{task.writer.who}, round {task.round}: {detail}")
            return False
        # drawn per task text: a re-run draws the same; a with-answer or with-tests task is checked already
        if task.kind in ("with-input", "no-input") and self.cfg.constraint_share:
            rng = random.Random(derive_seed(self.seed, task.prompt_id, "constraint"))
            if rng.random() < self.cfg.constraint_share:
                task.constraint = draw_constraint(rng)
        return True

    def _similar(self, instruction: str, written: Sequence[str]) -> tuple[str, str]:
        limit = self.cfg.max_similarity
        for seed in self.seeds:
            score = rouge_l(instruction, seed.instruction)
            if score >= limit:
                return "similar_to_seed", f"Rouge-L {score:.2f} >= {limit:g} with seed task {seed.id}"
        for earlier in written:
            score = rouge_l(instruction, earlier)
            if score >= limit:
                return "similar_to_earlier", f"Rouge-L {score:.2f} >= {limit:g} with {earlier[:60]!r}"
        return "", ""

    async def _answer(self, task: Task) -> list[tuple[str, str]]:
        """(who, text) of every answer: the writer's own output first, then each answerer's."""
        own = task.output.strip() and task.constraint is None  # written without the constraint: not an answer to it
        found = [(f"{task.writer.who} (writer)", task.output)] if own else []
        messages = [{"role": "user", "content": task.prompt}]

        async def ask(answerer: Agent) -> tuple[str, str] | None:
            seed = answerer.agent.seed or derive_seed(self.seed, task.prompt_id, answerer.who)
            try:
                reply = await answerer.client.chat(
                    messages, sampling_for(answerer.agent, seed), tag=TASK_PROMPT.tag(STAGE, "answerer")
                )
            except CallError as exc:
                log.debug("instructions: %s failed on %s: %s", answerer.who, task.prompt_id, exc)
                return None
            if reply.finish_reasons[0] == "length" or not reply.text.strip():
                return None  # a cut or empty answer is no answer to agree with
            return answerer.who, reply.text

        answers = await asyncio.gather(*(ask(a) for a in self.answerers))
        return found + [a for a in answers if a is not None]

    async def _select(self, task: Task, answers: list[tuple[str, str]], outcome: Outcome) -> None:
        where = f"{task.writer.who}, round {task.round}"
        outcome.answered += 1
        measure = self.cfg.agreement.measure
        consensus = find_consensus([text for _, text in answers], measure, self.embed)
        if consensus is None:
            outcome.drop(task.drop_id, "too_few_answers", f"{where}: {len(answers)} answer(s), 2 needed", True)
            return
        if consensus.agreement < self.cfg.agreement.threshold:
            detail = f"{where}: agreement {consensus.agreement:.3f} < {self.cfg.agreement.threshold:g} ({measure})"
            outcome.drop(task.drop_id, "disagreement", detail)
            return
        who, text = answers[consensus.index]
        disputed = await self._disputed(task, text)
        if disputed:
            outcome.drop(task.drop_id, "reference_disputed", f"{where}: the consensus answer ({who}) {disputed}")
            return
        if len(outcome.kept) >= self.cfg.n:
            outcome.drop(task.drop_id, "beyond_n", f"{where}: instructions.n = {self.cfg.n} were kept already")
            return
        outcome.kept.append(
            {
                "prompt_id": task.prompt_id,
                "prompt": task.prompt,
                "instruction": task.instruction,
                "input": task.input,
                "category": task.kind,
                "seeds": task.seeds,
                "batch": self.batch,
                "round": task.round,
                "writer": task.writer.who,
                "writer_model": task.writer.client.model,
                "answerers": [w for w, _ in answers],
                "answers": [t for _, t in answers],
                "measure": measure,
                "agreement": consensus.agreement,
                "exact_match": consensus.exact,
                "consensus_agent": who,
                "consensus_answer": text,
                "reference": task.reference.to_json() if task.reference is not None else None,
            }
        )

    async def _disputed(self, task: Task, text: str) -> str:
        """Why a checkable task's consensus answer fails its reference: the writer's answer or tests ("" when
        it passes, or when the task has none): the writer's reference is kept only if the answerers reach it."""
        if task.reference is None or self.verifier is None:
            return ""
        messages = [{"role": "user", "content": task.prompt}]
        verdict = await self.verifier.check(Prompt(task.prompt_id, messages, STAGE, task.kind, task.reference), text)
        if verdict is not None and verdict.status == "pass":
            return ""
        why = verdict.reason if verdict is not None else "no check applies"
        if task.function is not None:
            return f"does not pass the writer's tests of {task.function.name}(): {why}"
        return f"does not reach the writer's answer {task.answer!r}: {why}"


def planned_calls(cfg: InstructionsConfig, writers: int, answerers: int) -> dict[str, int]:
    """A batch's calls where every task written passes (the estimate's path): rounds of one call per
    writer until `n` tasks are written, and every task of those rounds answered by every answerer."""
    per_round = writers * cfg.per_call
    rounds = min(cfg.max_rounds, -(-cfg.n // per_round))
    return {"rounds": rounds, "writer_calls": rounds * writers, "tasks": rounds * per_round,
            "answer_calls": rounds * per_round * answerers}  # fmt: skip


def task_drop_reason(instruction: str, input_text: str, kind: str) -> tuple[str, str]:
    """(reason, what it means here) when a task fails the writers' filters; ("", "") when it passes."""
    words = len(instruction.split())
    if words <= 3:
        return "too_short", f"the instruction has {words} words (4 or more needed)"
    if words > 150:
        return "too_long", f"the instruction has {words} words (150 at most)"
    found = _NON_TEXT.search(instruction)
    if found:
        return "needs_non_text", f"the instruction mentions '{found.group(0)}', which a text-only assistant cannot use"
    if instruction[0] in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" or not instruction[0].isascii():
        return "malformed", f"the instruction starts with {instruction[0]!r}"
    if kind == "with-input" and not input_text.strip():
        return "missing_input", "a task with an input was asked for, and the writer wrote none"
    return "", ""
