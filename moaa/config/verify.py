"""The config of checking answers (moaa.verify): how checks run, what the SFT stage does with a
verdict, and the preference stage's `verifier` scorer.

A prompt whose row carries a reference (`answer`, `tests`, IFEval-style `instruction_id_list` /
`kwargs`, an SQL query or expected rows; `prompts.reference` maps the columns) is checked; a prompt
without one is not, unless `verify.check` names a check of your own.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from moaa.config.endpoints import Strict

CHECK_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module.path:function

Mode = Literal["require", "keep", "off"]


def _mode(value: Any) -> Any:
    """YAML reads `on`/`off`/`true`/`false` as booleans: true is require, false is off."""
    if value is True:
        return "require"
    if value is False:
        return "off"
    return value


class SandboxConfig(Strict):
    """Limits of the child process that runs an answer's code against its tests (moaa.verify.sandbox)."""

    isolation: Literal["auto", "bwrap", "namespaces", "rlimits"] = Field(
        "auto",
        description="auto: bubblewrap where installed, else Linux namespaces via `unshare` (read-only file "
        "system but the run's folder, no network, own process tree), else resource limits and an in-process "
        "guard only (README: what each protects against); naming one that is unavailable is an error",
    )
    cpu_s: int = Field(10, ge=1, description="CPU seconds the code may use")
    wall_s: float = Field(20.0, gt=0, description="seconds the run may take in all, tests included")
    memory_mb: int = Field(512, ge=64, description="memory (data segment and heap) the code may take, MiB")
    file_mb: int = Field(16, ge=1, description="largest file the code may write, MiB")
    processes: int = Field(32, ge=1, description="processes and threads the code may run at once")
    output_kb: int = Field(256, ge=1, description="output (stdout + stderr) after which the run is stopped, KiB")


class VerifyConfig(Strict):
    """How answers are checked, in every stage (moaa.verify)."""

    check: str | None = Field(
        None,
        description="a check of your own, `module:function`, importable from the working folder: called as "
        "function(answer: str, prompt: moaa.rows.Prompt) for every prompt, it returns True/False, None (cannot "
        "tell) or a moaa.verify.Verdict; its verdict joins those of the prompt's reference",
    )
    timeout_s: float = Field(
        20.0, gt=0, description="seconds one answer, constraint, SQL or own check may take before it is unverifiable"
    )
    workers: int = Field(2, ge=1, description="checks run at once (each a child process)")
    constraints: Literal["strict", "loose"] = Field(
        "strict",
        description="IFEval instructions: strict checks the answer as written; loose also accepts it without "
        "its first or last line or without markdown asterisks (IFEval's loose accuracy)",
    )
    sandbox: SandboxConfig = Field(SandboxConfig(), description="limits of the process that runs an answer's code")

    @field_validator("check")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not CHECK_NAME.match(value):
            raise ValueError(f"{value!r} is not module:function (e.g. my_checks:is_valid_json)")
        return value


class SFTVerifyConfig(Strict):
    """What the SFT stage does with the final answer's verdict, where a check exists."""

    mode: Mode = Field(
        "require",
        description="require: only an answer that passes its check becomes a row (the aggregator is re-asked "
        "with the check's feedback, then a passing proposal may be taken, else the prompt fails as "
        "`unverified`); keep: every row is kept with its verdict; off: nothing is checked",
    )
    reask: bool = Field(True, description="require: ask the aggregator once more, showing it what failed")
    proposals: bool = Field(
        True, description="require: when the aggregate and its re-ask fail, take the first passing proposal"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`sft.verify: keep` (or on/off/true/false) is `sft.verify: {mode: keep}`."""
        value = _mode(value)
        return {"mode": value} if isinstance(value, str) else value


class VerifierScorerConfig(Strict):
    """The `verifier` scorer: candidates ranked by their verdicts, a judge or reward model breaking ties."""

    tie_breaker: Literal["pointwise", "pairwise", "moa_judge", "reward_model", "none"] | None = Field(
        None,
        description="what orders candidates of equal verdicts (and scores prompts without a check): a judge "
        "of that kind (scorer.judges, ...) or scorer.reward_model; unset: pointwise when judges are set, "
        "reward_model when a reward model is, else none",
    )
    all_passed: Literal["judge", "drop"] = Field(
        "judge",
        description="every candidate passed: the tie-breaker's best vs worst (min_margin applies), or drop the "
        "prompt (reason all_passed); with no tie-breaker it is dropped",
    )
    unverifiable: Literal["judge", "drop"] = Field(
        "judge",
        description="a prompt without a check, or whose candidates could not be checked: the tie-breaker's "
        "pair, or drop it (reason unverifiable). A prompt whose candidates all failed is always dropped "
        "(all_failed): a chosen side is never a wrong answer",
    )

    def breaker(self, judges: bool, reward_model: bool) -> str:
        """The tie-breaker in effect: the one named, else what the scorer's settings provide."""
        if self.tie_breaker is not None:
            return self.tie_breaker
        return "pointwise" if judges else "reward_model" if reward_model else "none"


class ReferenceColumns(Strict):
    """Which columns of a prompt source hold a prompt's reference (moaa.rows.Reference); null turns one
    off. The defaults read moaa's own JSONL (`reference` objects, or `answer` / `tests` columns), GSM8K
    (`answer`, its `#### 72` line) and IFEval (`instruction_id_list`, `kwargs`); MBPP is `tests: test_list`."""

    column: str | None = Field(
        "reference",
        description="a column of reference objects: {answer, tests, language, instructions, kwargs, sql, "
        "schema, rows, ordered, data}",
    )
    answer: str | None = Field("answer", description="a column of final answers (numbers, LaTeX, GSM8K solutions)")
    tests: str | None = Field(
        "tests", description="a column of test code: a string of asserts or a list of them (MBPP: test_list)"
    )
    language: str | None = Field("language", description="a column naming the tests' language (python, javascript)")
    instructions: str | None = Field("instruction_id_list", description="a column of IFEval/IFBench instruction ids")
    kwargs: str | None = Field("kwargs", description="a column of the instructions' arguments, one object per id")
    data: list[str] = Field(
        default_factory=list, description="more columns handed to your own check as reference.data (verify.check)"
    )
