"""`moaa inspect NAME@VERSION`: read examples of a data set version side by side in the terminal.

moaa inspect local-moa@v3 [--n 5] [--prompt-id ID] [--root data] [--max-chars 1500]

For SFT rows: the prompt, every proposer answer from the trace (by turn and layer, marked selected
or not), moderator and synthesis steps, and the final answer. For DPO pairs: the prompt and every
candidate with its score, the judges' rationale and which one became chosen or rejected. On a
terminal the answers of a layer sit in columns (rich); otherwise the output is plain text.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moaa.rows import trace_meta

_PROPOSALS = ("proposal", "sample", "answer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show examples of a data set version: proposers, final answers, pairs")
    p.add_argument("ref", metavar="NAME[@VERSION]", help="e.g. local-moa@v2 (the latest without @)")
    p.add_argument("--n", type=int, default=5, help="examples shown per config (default 5)")
    p.add_argument("--prompt-id", default=None, help="show this prompt only")
    p.add_argument("--root", default="data", help="output root holding the data sets (default: data)")
    p.add_argument("--max-chars", type=int, default=1500, help="cut each text here (0: never; default 1500)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import sys

    from moaa.dataset.versions import resolve_version

    path = resolve_version(Path(args.root), args.ref)
    found = load_examples(path, args.n, args.prompt_id)
    title = f"{path.parent.name}@{path.name}"
    if sys.stdout.isatty():
        render_rich(found, title, args.max_chars)
    else:
        print(render_plain(found, title, args.max_chars))
    return 0


# ---------------------------------------------------------------- data


def load_examples(version_dir: Path, n: int, prompt_id: str | None = None) -> dict[str, Any]:
    """{"sft": [{"row", "steps"}], "dpo": [{"row", "samples", "verdicts"}], "rows": {config: total}}."""
    import polars as pl

    from moaa.dataset.files import scan_config
    from moaa.errors import InputError

    frames = {c: scan_config(version_dir, c) for c in ("sft", "dpo", "trace")}
    out: dict[str, Any] = {"sft": [], "dpo": [], "rows": {}}
    for config in ("sft", "dpo"):
        lf = frames[config]
        if lf is None:
            continue
        out["rows"][config] = lf.select(pl.len()).collect().item()
        picked = lf.filter(pl.col("prompt_id") == prompt_id) if prompt_id else lf
        rows = picked.head(max(n, 0)).collect().to_dicts()
        steps = _steps(frames["trace"], [r["prompt_id"] for r in rows], "sft" if config == "sft" else None)
        for row in rows:
            mine = [s for s in steps if s["prompt_id"] == row["prompt_id"]]
            if config == "sft":
                out["sft"].append({"row": row, "steps": mine})
            else:
                verdicts = {s["index"]: s for s in mine if s["kind"] == "verdict"}
                samples = [s for s in mine if s["kind"] == "sample"]
                out["dpo"].append({"row": row, "samples": samples, "verdicts": verdicts})
    if prompt_id and not out["sft"] and not out["dpo"]:
        raise InputError(
            f"prompt id {prompt_id!r} is in neither the sft nor the dpo rows of {version_dir}; "
            f"run `moaa inspect {version_dir.parent.name}@{version_dir.name}` to see some ids"
        )
    return out


def _steps(trace: Any, ids: list[str], stage: str | None) -> list[dict[str, Any]]:
    import polars as pl

    if trace is None or not ids:
        return []
    wanted = pl.col("prompt_id").is_in(ids)
    wanted &= (pl.col("stage") == "sft") if stage == "sft" else (pl.col("stage") != "sft")
    # Within a layer the proposals come first, then what read them (moderator, aggregate).
    later = ~pl.col("kind").is_in(list(_PROPOSALS))
    return trace.filter(wanted).sort(pl.col("turn"), pl.col("layer"), later, pl.col("index")).collect().to_dicts()


def _cut(text: Any, limit: int) -> str:
    text = str(text or "").strip()
    return text if not limit or len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more chars]"


Item = tuple[str, str, str, str]  # label, text, rationale, status (selected, chosen, failed, ...)


def _layers(steps: list[dict[str, Any]]) -> list[tuple[str, list[Item]]]:
    """SFT steps grouped into blocks (heading, items) in the order the engine made them."""
    blocks: list[tuple[str, list[Item]]] = []
    for s in steps:
        who, status = s["agent"] or s["model"], ""
        if s["kind"] in _PROPOSALS:
            heading = f"turn {(s['turn'] or 0) + 1}, layer {s['layer']}: {s['kind']}s"
            status = "failed" if s["finish_reason"] == "error" else "selected" if s["selected"] else "not selected"
            label = f"{who} ({s['model']}, {status})"
        else:
            heading = f"turn {(s['turn'] or 0) + 1}, layer {s['layer']}: {s['kind']}"
            meta = trace_meta(s)
            picks = (
                f", picked {meta['selected']}" + (", stop" if meta.get("stop") else "") if "selected" in meta else ""
            )
            label = f"{who} ({s['model']}{picks})"
        if not blocks or blocks[-1][0] != heading:
            blocks.append((heading, []))
        blocks[-1][1].append((label, s["text"], f"role: {s['role']}" if s["role"] else "", status))
    return blocks


def _candidates(ex: dict[str, Any]) -> list[Item]:
    """One item per DPO candidate, rationale from its verdict; the row's own pair without a trace."""
    row = ex["row"]
    if not ex["samples"]:
        return [
            (
                f"CHOSEN score {row[f'score_{k}']:.3g} ({row[f'{k}_model']})".replace("CHOSEN", k.upper()),
                row[k][-1]["content"],
                "",
                k,
            )
            for k in ("chosen", "rejected")
        ]
    out = []
    for s in ex["samples"]:
        meta = trace_meta(s)
        score = "unscored" if s["score"] is None else f"score {s['score']:.3g}"
        pick = meta.get("pick") or ""
        count = f", x{meta['count']}" if meta.get("count", 1) > 1 else ""
        why = (ex["verdicts"].get(s["index"]) or {}).get("text") or ""
        label = f"#{s['index']} {pick.upper() + ' ' if pick else ''}{score} ({s['model']}{count})"
        out.append((label, s["text"], why, pick))
    return out


def _prompt_lines(messages: list[dict[str, Any]], limit: int) -> list[str]:
    return [f"{m['role']}: {_cut(m['content'], limit)}" for m in messages]


# ---------------------------------------------------------------- plain text


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines()) or pad


def render_plain(found: dict[str, Any], title: str, limit: int) -> str:
    """Every example as plain text, one block per step (for pipes, logs and tests)."""
    shown = ", ".join(f"{len(found[c])} of {n} {c} rows" for c, n in found["rows"].items())
    lines = [f"moaa inspect {title}: {shown or 'no sft or dpo rows'}"]
    for ex in found["sft"]:
        row = ex["row"]
        lines += [
            "",
            f"=== SFT {row['prompt_id']} (method {row['method']}; models {', '.join(row['models'] or [])}) ===",
        ]
        lines += ["[prompt]", *(_indent(t, "  ") for t in _prompt_lines(_prompt_of(row["messages"]), limit))]
        for heading, items in _layers(ex["steps"]):
            lines.append(f"[{heading}]")
            for label, text, note, _ in items:
                lines += [_indent(label, "  "), *([_indent(note, "  ")] if note else []), _indent(_cut(text, limit))]
        lines += ["[final answer]", _indent(_cut(row["messages"][-1]["content"], limit))]
    for ex in found["dpo"]:
        row = ex["row"]
        lines += ["", f"=== DPO {row['prompt_id']} ===", "[prompt]"]
        lines += [_indent(t, "  ") for t in _prompt_lines(row["prompt"], limit)]
        lines.append("[candidates]")
        for label, text, why, _ in _candidates(ex):
            lines += [_indent(label, "  "), _indent(_cut(text, limit))]
            if why:
                lines.append(_indent("why: " + _cut(why, limit)))
    return "\n".join(lines)


def _prompt_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation before the final answer."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


# ---------------------------------------------------------------- rich


def render_rich(found: dict[str, Any], title: str, limit: int, console: Any = None) -> None:
    """Every example as rich panels; the answers of one layer (or the candidates) side by side."""
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.text import Text

    console = console or Console()
    shown = ", ".join(f"{len(found[c])} of {n} {c} rows" for c, n in found["rows"].items())
    console.print(Rule(f"moaa inspect {title}: {shown or 'no sft or dpo rows'}"))

    def columns(items: list[Item]) -> Any:
        width = max(30, console.width // max(1, min(len(items), 3)) - 2)
        panels = []
        for label, text, note, status in items:
            body = [Text(_cut(text, limit))] + ([Text(_cut(note, limit), style="dim")] if note else [])
            panels.append(
                Panel(Group(*body), title=Text(label), border_style=_STYLES.get(status, "white"), width=width)
            )
        return Columns(panels)

    for ex in found["sft"]:
        row = ex["row"]
        console.print(Rule(Text(f"SFT {row['prompt_id']} - {row['method']}"), style="cyan"))
        console.print(Panel(Text("\n".join(_prompt_lines(_prompt_of(row["messages"]), limit))), title="prompt"))
        for heading, items in _layers(ex["steps"]):
            console.print(Text(heading, style="bold"))
            console.print(columns(items))
        final = Text(_cut(row["messages"][-1]["content"], limit))
        console.print(Panel(final, title="final answer", border_style="cyan"))
    for ex in found["dpo"]:
        row = ex["row"]
        console.print(Rule(Text(f"DPO {row['prompt_id']}"), style="magenta"))
        console.print(Panel(Text("\n".join(_prompt_lines(row["prompt"], limit))), title="prompt"))
        console.print(columns(_candidates(ex)))


_STYLES = {"selected": "green", "chosen": "green", "not selected": "bright_black", "rejected": "red", "failed": "red"}
