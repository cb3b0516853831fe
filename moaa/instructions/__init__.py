"""The instruction stage: new prompts written by a mixture from seed tasks and kept by the consensus of
their answers (Ensemble-Instruct, Lee et al. 2023; moaa.prompts.instructions holds its prompts).

    from moaa.instructions.batches import synthesize
    source = synthesize(config)   # a PromptSourceConfig of the kept tasks, for the SFT stage

seeds.py reads the seed tasks, synthesis.py runs a batch's rounds (every drop named), writer_replies.py
reads a writer's reply into tasks (a with-tests task's function strictly), consensus.py and rouge.py
decide agreement, verifiable.py draws IFEval constraints, batches.py keeps the batches in the run's work
folder.
"""
