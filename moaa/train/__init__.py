"""Fine-tuning the student on moaa's data and closing the loop (TRL SFT/DPO, eval, self-improvement).

- settings: TRL config YAML (SFTConfig / DPOConfig / ModelConfig field names) + `--set` overrides
- data: which data set version to read (`--data NAME[@vN]`, default the newest) and its splits
- student: model references (local GGUF student, folders, LoRA adapters, Hub ids) and loading
- trainer, sft, dpo: one training run into `runs/<kind>/<dataset>-<version>-<timestamp>/`
- card: the run's model card; runs: run folders and `lineage.json`; report: markdown tables
- evaluate, winrate: pairwise eval against a baseline on held-out prompts (win rate, CI, LC win rate)
- loop: the self-improvement loop (MoA data -> SFT -> student samples -> judged pairs -> DPO -> eval)

Heavy imports (torch, transformers, trl, datasets) happen inside functions.
"""
