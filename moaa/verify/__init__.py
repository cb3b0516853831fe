"""Checking answers instead of judging them: verdicts against a prompt's reference.

A prompt row may carry a reference (moaa.rows.Reference): a final `answer` (HF math-verify), `tests`
(the answer's code run in a sandbox), `constraints` (IFEval/IFBench instructions, if-verifiable),
an SQL query or expected rows (SQLite), and the run may name its own check (`verify.check`). Each
check gives a Verdict: pass, fail or unverifiable, with a short reason. The SFT stage keeps only
passing answers where a check exists (moaa.engine.verification), the preference stage's `verifier`
scorer ranks candidates by verdict (moaa.preference.verified_pairs).

    from moaa.verify import Verifier
    verdict = await Verifier(config.verify).check(prompt, answer_text)   # None: nothing to check
"""

from moaa.verify.checks import Verifier, count, status_counts, trace_step
from moaa.verify.verdict import STATUSES, Verdict, combine, failed, passed, unverifiable

__all__ = [
    "STATUSES",
    "Verdict",
    "Verifier",
    "combine",
    "count",
    "failed",
    "passed",
    "status_counts",
    "trace_step",
    "unverifiable",
]
