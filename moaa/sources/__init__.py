"""Prompt sources: read instructions from a file or Hugging Face data set, normalise, filter, sample.

    from moaa.sources import load_prompts, stream_prompts
    prompt_set = load_prompts(PromptSourceConfig(path="configs/prompts/default.jsonl"))  # a list
    with stream_prompts(cfg, spill_dir=work_dir) as prompts:  # any number of prompts
        for prompt in prompts: ...

The modules, by job: `prompt_stream` (the stream: read once, filtered, spilled, sampled; its docstring
says in which order the filters run and what memory holds), `readers` (file and Hub rows),
`conversations` (a row's messages), `filters` (lengths, de-duplication, sampling), `drops` (each
dropped prompt named), `references` (what a prompt's answer is checked against).
"""

from moaa.sources.prompt_stream import (
    DROP_REASONS,
    PromptSet,
    PromptStream,
    file_fingerprint,
    load_prompts,
    stream_prompts,
)

__all__ = ["DROP_REASONS", "PromptSet", "PromptStream", "file_fingerprint", "load_prompts", "stream_prompts"]
