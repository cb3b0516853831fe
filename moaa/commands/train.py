"""`moaa train {sft,dpo,eval,loop}`: fine-tune the student on a data set version, compare, iterate.

    moaa train sft  [--data NAME[@vN]] [--model M] [--config configs/train/sft.yaml] [--set k=v] [--output DIR]
    moaa train dpo  [... same; --model defaults to the latest SFT run]
    moaa train eval [--model M] [--baseline B] [--data NAME[@vN]] [--config configs/train/eval.yaml] [--set k=v]
    moaa train loop [--data-config configs/local.yaml] [--rounds 2] [--min-gain 0.05] [--student-proposer]

Only argparse is imported here; torch, transformers and TRL load inside the handlers.
"""

from __future__ import annotations

import argparse

DATA_ROOT = "data"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="fine-tune the student (SFT, DPO), evaluate it, run the self-improvement loop"
    )
    kinds = parser.add_subparsers(dest="train_command", metavar="{sft,dpo,eval,loop}")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    for kind, text in (
        ("sft", "supervised fine-tuning (TRL SFTTrainer)"),
        ("dpo", "preference tuning (TRL DPOTrainer)"),
    ):
        p = kinds.add_parser(kind, help=text, description=f"{text} on the `{kind}` config of a data set version")
        _common(p, f"configs/train/{kind}.yaml")
        model_help = "the local student" if kind == "sft" else "the latest SFT run's output"
        p.add_argument(
            "--model", help=f"model folder, LoRA adapter folder, .gguf file or Hub id (default: {model_help})"
        )
        p.add_argument("--merge", action="store_true", help="also save a merged full model in OUTPUT/merged (for vLLM)")
        p.set_defaults(func=handle_train, kind=kind)
    p = kinds.add_parser("eval", help="pairwise eval of a model against a baseline on held-out prompts")
    _common(p, "configs/train/eval.yaml")
    p.add_argument("--model", help="model to evaluate (default: the latest DPO run, else the latest SFT run)")
    p.add_argument("--baseline", help="what it is compared with (default: the model it was trained from, first)")
    p.set_defaults(func=handle_eval)
    p = kinds.add_parser("loop", help="self-improvement: MoA data -> SFT -> student samples -> judged pairs -> DPO")
    p.add_argument("--data-config", default="configs/local.yaml", help="run config that makes each round's data")
    p.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE", help="override in the run config")
    p.add_argument("--rounds", type=int, default=2, help="at most this many rounds (default 2)")
    p.add_argument("--min-gain", type=float, default=0.05, help="stop when win rate vs the previous round - 0.5 < this")
    p.add_argument("--model", help="the starting student (default: the local student)")
    p.add_argument("--student-proposer", action="store_true", help="add the current student to the MoA proposers")
    p.add_argument("--prompts", type=int, help="prompts per round (prompts.limit of the run config)")
    p.add_argument("--samples", type=int, help="student samples per prompt for the DPO pairs (preference.samples)")
    for kind in ("sft", "dpo", "eval"):
        p.add_argument(f"--{kind}-config", default=f"configs/train/{kind}.yaml", help=f"{kind} settings")
        p.add_argument(f"--{kind}-set", action="append", default=[], metavar="KEY=VALUE", help=f"{kind} override")
    p.add_argument("--name", default="loop", help="names the loop's data sets and its folder under runs/loop/")
    p.add_argument("--runs-root", default="runs", help="where run folders go (default runs/)")
    p.set_defaults(func=handle_loop)


def _common(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--data", metavar="NAME[@VERSION]", help="data set version (default: the newest under --data-root)")
    p.add_argument(
        "--data-config", metavar="RUN_CONFIG",
        help="use the data set this run config writes (its name, under its output.root): what `make data` made "
        "for the same CONFIG; --data wins",
    )  # fmt: skip
    p.add_argument("--config", default=config, help=f"settings file (default {config})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    p.add_argument("--output", help="output folder (default: a new folder under runs/)")
    p.add_argument("--data-root", default=DATA_ROOT, help="where data set versions live (default data/)")
    p.add_argument("--runs-root", default="runs", help="where run folders go (default runs/)")


def data_of_config(args: argparse.Namespace, rows: str) -> None:
    """With --data-config and no --data: the newest version of that config's data set with `rows`
    rows becomes --data (and its output.root the data root), printed before anything loads."""
    if args.data or not args.data_config:
        return
    from moaa.config import load_config
    from moaa.train.data import find_dataset

    config = load_config(args.data_config)
    if args.data_root == DATA_ROOT:
        args.data_root = config.output.root
    found = find_dataset(config.name, args.data_root, config=rows)
    print(f"data set: {found.ref} ({found.path}), the newest {rows} rows {args.data_config} wrote", flush=True)
    args.data = str(found.path)


def handle_train(args: argparse.Namespace) -> int:
    from moaa.train.dpo import run_dpo
    from moaa.train.sft import run_sft

    data_of_config(args, args.kind)
    run = run_sft if args.kind == "sft" else run_dpo
    result = run(
        data=args.data, model=args.model, config=args.config, overrides=args.set, output=args.output,
        data_root=args.data_root, runs_root=args.runs_root, merge=args.merge,
    )  # fmt: skip
    print(result.summary())
    print(f"model card: {result.output / 'README.md'}")
    return 0


def handle_eval(args: argparse.Namespace) -> int:
    from moaa.train.evaluate import run_eval

    if not args.model:  # an explicit model is evaluated on the data set it was trained on
        data_of_config(args, "sft")

    result = run_eval(
        model=args.model, baseline=args.baseline, data=args.data, config=args.config, overrides=args.set,
        output=args.output, data_root=args.data_root, runs_root=args.runs_root,
    )  # fmt: skip
    print(result.summary())
    print(f"results: {result.output / 'results.json'}, {result.output / 'results.md'}")
    return 0


def handle_loop(args: argparse.Namespace) -> int:
    from flows.prefect_env import ensure_api
    from moaa.train.loop import LoopSettings

    settings = LoopSettings(
        name=args.name, data_config=args.data_config, data_overrides=args.data_set, rounds=args.rounds,
        min_gain=args.min_gain, student=args.model, student_proposer=args.student_proposer,
        prompts_per_round=args.prompts, samples=args.samples, runs_root=args.runs_root,
        sft_config=args.sft_config, sft_overrides=args.sft_set, dpo_config=args.dpo_config,
        dpo_overrides=args.dpo_set, eval_config=args.eval_config, eval_overrides=args.eval_set,
    )  # fmt: skip
    ensure_api()
    from flows.loop_flow import self_improvement_loop

    summary = self_improvement_loop(settings.model_dump())
    print(summary["table"])
    print(f"stopped: {summary['stopped']}; lineage: {summary['lineage']}")
    return 0
