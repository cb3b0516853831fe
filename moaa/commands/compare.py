"""`moaa compare CONFIG`: arm A (the config's method) vs arm B (a baseline) on the same prompts, proven
on the same student: data, SFT, then the students judged head to head and each against the base.

    moaa compare configs/local.yaml [--arm-b single] [--baseline-agent precise] [--arm-a moa]
        [--set prompts.seed=1] [--prompts 40] [--settings configs/train/compare.yaml] [--sft-set k=v]
        [--eval-set k=v] [--model STUDENT] [--name NAME] [--runs-root runs] [--verified]
    moaa compare configs/local.yaml --preference-a a.yaml --preference-b b.yaml [--dpo-set k=v]   # two recipes

Only argparse is imported here; Prefect, torch and transformers load inside the handler.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="A/B two generation methods: same prompts, same student, judged head to head and vs base"
    )
    p.add_argument("config", help="run config; arm A is its method, e.g. configs/local.yaml")
    # Checked when the arm's config loads, against the registered methods (moaa.engine.methods).
    p.add_argument("--arm-a", metavar="METHOD", help="arm A's method (default: the config's sft.method)")
    p.add_argument("--arm-b", metavar="METHOD", help="arm B's method, e.g. self-moa (default: single)")
    p.add_argument("--baseline-agent", metavar="NAME",
                   help="a one-model arm's agent: a proposer's name or index, or 'aggregator' "
                   "(default: the proposer on the aggregator's endpoint)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run config override, both arms")
    p.add_argument("--prompts", type=int, help="prompts.limit of both arms (default: the settings file's)")
    p.add_argument("--test-size", type=float, help="output.test_size of both arms (default: the settings file's)")
    p.add_argument("--settings", default="configs/train/compare.yaml", help="compare settings (the scale)")
    p.add_argument("--sft-set", action="append", default=[], metavar="KEY=VALUE", help="SFT override, both arms")
    p.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE", help="eval/judge override")
    p.add_argument("--model", help="the student both arms fine-tune (default: the local student)")
    p.add_argument("--name", help="names the arms' data sets <name>-A, <name>-B (default: the config's name)")
    p.add_argument("--runs-root", help="where run folders go (default runs/)")
    p.add_argument("--preference-a", metavar="FILE",
                   help="compare preference recipes: arm A's preference block (YAML), laid over the config's; "
                   "the arms then share the SFT stage and differ only in preference")  # fmt: skip
    p.add_argument("--preference-b", metavar="FILE", help="arm B's preference block (see --preference-a)")
    p.add_argument("--dpo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="DPO override, both arms (preference recipes)")  # fmt: skip
    p.add_argument("--verified", action="store_true", default=None,
                   help="also score the students by held-out pass rate (prompts that carry a reference)")  # fmt: skip
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from moaa.api import compare
    from moaa.train.comparison_report import format_summary
    from moaa.train.recipes import read_recipe

    recipes = {f"preference_{arm}": read_recipe(path) for arm in "ab" if (path := getattr(args, f"preference_{arm}"))}
    results = compare(
        args.config, arm_a=args.arm_a, arm_b=args.arm_b, baseline_agent=args.baseline_agent, prompts=args.prompts,
        settings=args.settings, data_overrides=args.set, test_size=args.test_size, student=args.model,
        name=args.name, runs_root=args.runs_root, sft_overrides=args.sft_set, eval_overrides=args.eval_set,
        verified=args.verified, dpo_overrides=args.dpo_set, **recipes,
    )  # fmt: skip
    print(format_summary(results))
    print(f"report: {results['report']}; results: {results['folder']}/results.json")
    return 0
