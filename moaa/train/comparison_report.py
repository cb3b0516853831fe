"""The comparison's report: `report.md` with plots (`report/*.png`), and the CLI's summary.

    write_report(Path("runs/compare/local-moa-20250101-120000"), results)   # -> .../report.md

Sections: the two arms, the head to head (A vs B), each arm vs the base student, cost per prompt
(quality per dollar on one page), answer lengths, and the artifacts. Plots use matplotlib's Agg
canvas, as moaa.dataset.run_report does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moaa.dataset.report_plots import new_figure
from moaa.train.tables import cut_line

IMAGE_DIR = "report"
WEAK_JUDGE = (
    "The judge is the embedded 0.5B model: at this scale the verdict is weak (a few prompts, a small "
    "judge). Name a strong judge in the eval settings (`--eval-set judge.endpoint=...`) for numbers you quote."
)


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def _judge(results: dict[str, Any]) -> str:
    return results["judge"]["model"] or results["judge"]["endpoint"]


def _interval(m: dict[str, Any]) -> str:
    lo, hi = m.get("ci") or (None, None)
    return f"{_pct(m['win_rate'])} [{_pct(lo)}, {_pct(hi)}]"


def matchup_table(results: dict[str, Any]) -> str:
    """One row per matchup: counts, win rate with interval, LC win rate, mean answer chars."""
    any_m = next(iter(results["matchups"].values()))
    level = f"{100 * any_m.get('confidence', 0.95):.0f}% {any_m.get('ci_method', 'wilson')}"
    lines = [
        f"| matchup | win | tie | loss | unjudged | win rate [{level}] | LC win rate | order agreement "
        "| mean chars (model / baseline) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in results["matchups"].items():
        chars = m.get("mean_chars") or {}
        lines.append(
            f"| {key} | {m['win']} | {m['tie']} | {m['loss']} | {m['unjudged']} | {_interval(m)} "
            f"| {_pct(m.get('lc_win_rate'))} | {_pct(m.get('order_agreement'))} "
            f"| {chars.get('model', 0):.0f} / {chars.get('baseline', 0):.0f} |"
        )
    cut = [f"{key}: {line}" for key, m in results["matchups"].items() if (line := cut_line(m))]
    return "\n".join(lines + ([""] + cut if cut else []))


def cost_table(results: dict[str, Any]) -> str:
    lines = [
        "| arm | method | data set | SFT rows | calls / prompt | tokens / prompt | cost / prompt | new calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results["arms"].items():
        c = r["cost"]
        lines.append(
            f"| {label} | {r['describe']} | {r['dataset']} | {c['rows']} | {c['calls_per_prompt']} "
            f"| {c['tokens_per_prompt']} | ${c['cost_per_prompt']:.6f} | {c['new_calls']} |"
        )
    if all("pairs" in r["cost"] for r in results["arms"].values()):  # the arms made pairs: how many, and the drops
        lines += ["", "| arm | DPO pairs | of prompts | dropped |", "|---|---|---|---|"]
        for label, r in results["arms"].items():
            c = r["cost"]
            drops = ", ".join(f"{k} {v}" for k, v in sorted(c["pairs_dropped"].items())) or "none"
            lines.append(f"| {label} | {c['pairs']} | {c['pair_prompts']} | {drops} |")
    return "\n".join(lines)


def length_table(results: dict[str, Any]) -> str:
    lines = ["| student | answers | mean chars | median | min | max | empty |", "|---|---|---|---|---|---|---|"]
    for label, s in results["lengths"].items():
        lines.append(
            f"| {label} | {s['n']} | {s['mean']:.0f} | {s['median']:.0f} | {s['min']} | {s['max']} | {s['empty']} |"
        )
    return "\n".join(lines)


def format_summary(results: dict[str, Any]) -> str:
    """What `moaa compare` prints: the arms, every matchup's win rate with its interval, cost per prompt."""
    a, b = results["arms"]["A"], results["arms"]["B"]
    held = results["held_out"]
    lines = [
        f"compare {results['name']}: A = {a['describe']} vs B = {b['describe']}, "
        f"student {Path(results['student']).name}, {held['n']} held-out prompts, judge {_judge(results)}",
        "",
        matchup_table(results),
        "",
        cost_table(results),
    ]
    if results.get("verified"):
        from moaa.train.pass_rates import pass_rate_table

        n = results["verified"]["n"]
        lines += ["", f"held-out pass rate ({n} prompts with a reference, each answer checked):", "",
                  pass_rate_table(results["verified"])]  # fmt: skip
    if results["judge"].get("local"):
        lines += ["", WEAK_JUDGE]
    return "\n".join(lines)


def write_report(folder: Path, results: dict[str, Any]) -> Path:
    """Write `report.md` and its plots into `folder`; returns report.md."""
    images = folder / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(results, images)
    a, b = results["arms"]["A"], results["arms"]["B"]
    held = results["held_out"]
    lines = [
        f"# Compare {results['name']}: A = {a['method']} vs B = {b['method']}",
        "",
        f"- Run config: `{results['run_config']}`; both arms share its prompts, seeds, split and request cache.",
        *_arm_lines(results),
        f"- Judge: {_judge(results)}, both orders (a disagreement is "
        f"a tie), on {held['n']} held-out prompts no student was trained on: {', '.join(held['prompt_ids'])}",
    ]
    if held.get("differs"):
        lines.append(f"- {held['differs']} multi-turn prompt(s) carry arm A's earlier assistant turns.")
    if results["judge"].get("local"):
        lines += ["", f"> {WEAK_JUDGE}"]
    lines += ["", "## Students A vs B, and each vs the base student", "", matchup_table(results), ""]
    lines += _image(plots, "win_rates", "win rates")
    if results.get("verified"):
        from moaa.train.pass_rates import pass_rate_table

        v = results["verified"]
        lines += ["## Held-out pass rate (answers checked against references)", "",
                  f"{v['n']} held-out prompts with a reference: {', '.join(v['prompt_ids'])}", "",
                  pass_rate_table(v), ""]  # fmt: skip
    lines += ["## Cost per prompt (making the data)", "", cost_table(results), ""]
    lines += _image(plots, "cost", "cost per prompt")
    lines += ["## Answer lengths (held-out prompts)", "", length_table(results), ""]
    lines += _image(plots, "lengths", "answer lengths")
    lines += ["## Artifacts", "", "- `results.json`: every number above, per-prompt scores in each matchup"]
    lines += [f"- `{Path(m['eval']).name}/`: {key}, with every answer and verdict" for key, m in
              results["matchups"].items()]  # fmt: skip
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _arm_lines(results: dict[str, Any]) -> list[str]:
    """The report's lines on the arms and the base student, for either kind of compare."""
    a, b = results["arms"]["A"], results["arms"]["B"]
    if results.get("kind") == "preference":
        return [
            f"- Arm A: {a['describe']} -> `{a['dataset']}` -> DPO `{a['sft']}`",
            f"- Arm B: {b['describe']} -> `{b['dataset']}` -> DPO `{b['sft']}`",
            f"- Base student: `{results['student']}`, the SFT model both DPO runs start from (trained once, on "
            "arm A's SFT rows: the arms differ only in `preference`), with the same DPO settings",
        ]
    return [
        f"- Arm A: {a['describe']} -> `{a['dataset']}` -> SFT `{a['sft']}`",
        f"- Arm B: {b['describe']} -> `{b['dataset']}` -> SFT `{b['sft']}`",
        f"- Base student: `{results['student']}` (both arms fine-tune it with the same settings)",
    ]


def _image(plots: dict[str, Path], key: str, alt: str) -> list[str]:
    return [f"![{alt}]({IMAGE_DIR}/{plots[key].name})", ""] if key in plots else []


def draw_plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    """win_rates.png (each matchup with its interval), cost.png (calls and tokens per prompt), lengths.png."""
    out = {}
    keys = list(results["matchups"])
    rates, below, above = [], [], []
    for key in keys:  # a matchup without a judged prompt (NaN) is drawn as an empty bar
        m = results["matchups"][key]
        rate = m["win_rate"] if m["win_rate"] == m["win_rate"] else 0.0
        lo, hi = m.get("ci") or (rate, rate)
        rates.append(rate)
        below.append(max(rate - lo, 0) if lo == lo else 0.0)
        above.append(max(hi - rate, 0) if hi == hi else 0.0)
    fig = new_figure(height=3.5)
    ax = fig.add_subplot()
    err = [below, above]
    ax.barh(keys, rates, xerr=err, capsize=4, color="tab:blue")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), title="Win rate of the first named (interval: error bar)", xlabel="win rate")
    ax.invert_yaxis()
    fig.tight_layout()
    out["win_rates"] = _save(fig, folder / "win_rates.png")

    arms = results["arms"]
    fig = new_figure(height=3.5)
    left, right = fig.subplots(1, 2)
    labels = [f"{k}: {r['method']}" for k, r in arms.items()]
    left.bar(labels, [r["cost"]["calls_per_prompt"] for r in arms.values()], color="tab:orange")
    left.set(title="Model calls per prompt")
    right.bar(labels, [r["cost"]["tokens_per_prompt"] for r in arms.values()], color="tab:green")
    right.set(title="Tokens per prompt")
    fig.tight_layout()
    out["cost"] = _save(fig, folder / "cost.png")

    lengths = results.get("answer_chars") or {}
    if lengths:
        fig = new_figure(height=3.5)
        ax = fig.add_subplot()
        ax.boxplot(list(lengths.values()), tick_labels=list(lengths), vert=False)
        ax.set(title="Answer lengths on the held-out prompts", xlabel="characters")
        fig.tight_layout()
        out["lengths"] = _save(fig, folder / "lengths.png")
    return out


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path
