"""The generation engine: answers prompts with single, MoA, MoA-Lite, Self-MoA, Self-MoA-Seq or SMoA.

Pure async logic over the ChatClient seam (no Prefect). Entry points: `answer_prompt` (one prompt,
all its turns), `run_prompts` (a lazily consumed stream, bounded in flight), `generate_roles`
(SMoA roles, once per run), `calls_per_prompt` (dry-run call counts, added up from the method's plan).
Each method is one module (moa, self_moa, smoa): its turn function, its call plan and its config
rule in one `Method` (moaa.engine.plan), registered in moaa.engine.methods.
"""

from moaa.engine.context import PromptResult
from moaa.engine.methods import calls_per_prompt
from moaa.engine.runner import answer_prompt, run_prompts
from moaa.engine.smoa import generate_roles

__all__ = ["PromptResult", "answer_prompt", "calls_per_prompt", "generate_roles", "run_prompts"]
