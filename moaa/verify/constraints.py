"""The `constraints` check: IFEval / IFBench verifiable instructions, with the `if-verifiable` package.

Each instruction id names a checker in IFEval's registry ("keywords:existence") or IFBench's
("count:word_count_range"); its kwargs are the checker's arguments, all of which must be given
(a checker missing one would draw it at random). `strict` checks the answer as written; `loose`
also accepts it without its first or last line or without markdown asterisks (IFEval's loose
accuracy). The score is the fraction of instructions followed.

Offline: NLTK's data is not on PyPI. IFEval's `length_constraints:number_sentences` and
`change_case:capital_word_frequency`, and IFBench checkers that tokenise, need NLTK's punkt (or
stopwords) data; where it is not installed (`python -m nltk.downloader punkt punkt_tab
stopwords`) such an instruction is unverifiable, named in the reason, never guessed. Importing
IFBench's registry would try to download that data: moaa never downloads it at run time.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from moaa.verify.extract import strip_thinking
from moaa.verify.verdict import Verdict, failed, passed, unverifiable

_NLTK_RESOURCE = re.compile(r"Resource\s+(?:\x1b\[\d+m)?'?([\w/.-]+)")


@functools.cache
def registries() -> tuple[dict[str, Any], dict[str, Any]]:
    """IFEval's and IFBench's checker classes by instruction id."""
    import langdetect
    import nltk

    langdetect.DetectorFactory.seed = 0  # its guesses are random unless seeded: one answer, one verdict
    real_download = nltk.download
    nltk.download = lambda *args, **kwargs: False  # IFBench's module fetches its data at import
    try:
        from if_verifiable.ifbench.instructions_registry import INSTRUCTION_DICT as IFBENCH
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT as IFEVAL
    finally:
        nltk.download = real_download
    return IFEVAL, IFBENCH


def checker_of(instruction: str) -> Any | None:
    ifeval, ifbench = registries()
    cls = ifeval.get(instruction) or ifbench.get(instruction)
    return cls(instruction) if cls is not None else None


def check_constraints(
    instructions: list[str], kwargs: list[dict[str, Any]], prompt: str, text: str, mode: str = "strict"
) -> Verdict:
    from if_verifiable.common import get_loose_transformations

    answer = strip_thinking(text).strip()
    variants = [answer] if mode == "strict" else [v for v in get_loose_transformations(answer) if v.strip()]
    followed, broken, unknown = [], [], []
    for instruction, args in zip(instructions, kwargs, strict=True):
        checker = checker_of(instruction)
        if checker is None:
            unknown.append(f"{instruction}: not an IFEval or IFBench instruction id")
            continue
        given = {k: v for k, v in args.items() if v is not None}
        missing = [k for k in checker.get_instruction_args_keys() if k != "prompt" and k not in given]
        if missing:
            unknown.append(f"{instruction}: kwargs {', '.join(missing)} not given")
            continue
        try:
            checker.build_description(**given)
            if "prompt" in (checker.get_instruction_args() or {}):
                checker.build_description(prompt=prompt)
            ok = bool(answer) and any(checker.check_following(v) for v in variants)
        except LookupError as exc:
            found = _NLTK_RESOURCE.search(str(exc))
            unknown.append(f"{instruction}: needs NLTK's {found.group(1) if found else ''} data, not installed")
            continue
        except Exception as exc:  # noqa: BLE001 - a checker's own error on odd input
            unknown.append(f"{instruction}: the checker raised {type(exc).__name__}: {exc}")
            continue
        (followed if ok else broken).append(instruction)
    checked = len(followed) + len(broken)
    score = len(followed) / checked if checked else None
    details = {"followed": followed, "broken": broken, "unverifiable": unknown, "mode": mode}
    if broken:
        return failed(f"{len(broken)} of {len(instructions)} instructions not followed: {', '.join(broken)}",
                      "constraints", score or 0.0, **details)  # fmt: skip
    if unknown:
        return unverifiable(unknown[0], "constraints", **details)
    return passed(f"{len(followed)} of {len(instructions)} instructions followed", "constraints", 1.0, **details)
