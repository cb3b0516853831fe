"""`moaa train ...` from the command line: light imports, sft/dpo/eval on tiny models, one-line errors.
The real `make sft` / `make dpo` on the embedded student are the slow tests at the end.

Run: .venv/bin/python -m pytest tests/test_train_cli.py -x -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import TINY_SETTINGS, write_demo_version
from test_train_eval import longer_wins
from tiny_models import build_tiny_causal_lm

from moaa.cli import main
from moaa.testing.openai_server import OpenAITestServer

ROOT = Path(__file__).resolve().parents[1]


def test_train_command_imports_nothing_heavy():
    code = "import sys, moaa.cli; moaa.cli.build_parser(); print(sorted(m for m in ('torch', 'trl', 'transformers', 'datasets', 'prefect') if m in sys.modules))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_sft_dpo_eval_from_the_command_line(tmp_path: Path, capsys):
    model = build_tiny_causal_lm(tmp_path / "lm")
    write_demo_version(tmp_path / "data")
    where = ["--data-root", str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs")]
    sets = [arg for s in TINY_SETTINGS for arg in ("--set", s)]
    assert main(["train", "sft", "--model", str(model), *where, *sets]) == 0
    out = capsys.readouterr()
    assert "sft: 17 rows of demo@v1, 2 steps" in out.out and "train_loss" in out.out
    assert (out.out + out.err).count("'loss':") == 2  # the trainer prints the loss of every step
    assert main(["train", "dpo", "--data", "demo@v1", *where, *sets]) == 0
    assert "dpo: 17 rows of demo@v1, 2 steps" in capsys.readouterr().out
    eval_cfg = tmp_path / "eval.yaml"
    with OpenAITestServer(responder=longer_wins) as server:
        eval_cfg.write_text(
            f"endpoints: {{judge: {{base_url: '{server.base_url}', model: judge}}}}\n"
            "judge: {endpoint: judge}\ngeneration: {max_tokens: 4, temperature: 0}\nanswers: {truncated: keep}\n"
        )
        assert main(["train", "eval", "--config", str(eval_cfg), "--set", "limit=2", *where]) == 0
    out = capsys.readouterr().out
    assert "Pairwise eval on 2 held-out prompts (demo@v1, test split)" in out and "| win | tie | loss |" in out


def test_make_sft_and_dpo_use_the_data_set_of_the_config_and_dpo_never_continues_other_data(tmp_path: Path, capsys):
    """Two data sets under data/: `--data-config` (what `make sft/dpo/eval` pass) picks its own, not the
    newest; DPO's default start is the latest SFT run on the same data set, and with none it refuses."""
    model = build_tiny_causal_lm(tmp_path / "lm")
    data, runs = tmp_path / "data", tmp_path / "runs"
    write_demo_version(data, name="demo")
    time.sleep(0.01)
    write_demo_version(data, name="other")  # written last: what `--data`-less training used to take
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"name: demo\nendpoints: {{m: {{base_url: 'http://127.0.0.1:9/v1', model: m}}}}\n"
        f"prompts: {{path: x.jsonl}}\nsft: {{method: single, proposers: [{{endpoint: m}}]}}\n"
        f"output: {{root: '{data}'}}\n"
    )
    sets = [arg for s in TINY_SETTINGS for arg in ("--set", s)]
    assert main(["train", "sft", "--data-config", str(config), "--model", str(model), "--runs-root", str(runs),
                 *sets]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith(f"data set: demo@v1 ({data / 'demo' / 'v1'}), the newest sft rows {config} wrote\n")
    assert "sft: 17 rows of demo@v1" in out

    # DPO on the other data set: the only SFT run was trained on demo, so it refuses, naming both
    code = main(["train", "dpo", "--data", "other", "--data-root", str(data), "--runs-root", str(runs), *sets])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no finished sft run under" in err and "was trained on data set 'other'" in err
    assert "trained on demo" in err and "--model RUN" in err
    # on the config's data set it continues from that SFT run
    assert main(["train", "dpo", "--data-config", str(config), "--runs-root", str(runs), *sets]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data set: demo@v1") and "dpo: 17 rows of demo@v1" in out
    lineage = json.loads(next((runs / "dpo").glob("*/lineage.json")).read_text())
    assert [p["ref"] for p in lineage["parents"]][0] == "demo@v1"
    assert lineage["base_model"]["ref"].startswith(str(runs / "sft" / "demo-v1-"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "sft", "--set", "max_step=3"],
            "unknown key 'max_step' (not a field of trl.SFTConfig or trl.ModelConfig); did you mean 'max_steps'?",
        ),  # noqa: E501
        (["train", "dpo", "--data", "nothing@v1", "--model", "x"], "no data set named 'nothing' under"),
        (["train", "eval", "--set", "ci=exact"], "ci: Input should be 'wilson' or 'bootstrap'"),
    ],
)
def test_user_mistakes_are_one_line(argv, message, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main([*argv, "--data-root", str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------- the real student (slow)


def _make(target: str, args: str, log: Path) -> tuple[int, float, str]:
    started = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(["make", target, f"ARGS={args}"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    return proc.returncode, time.time() - started, log.read_text()


@pytest.mark.heavy
def test_make_sft_and_dpo_on_the_local_student(tmp_path: Path):
    """`make sft` then `make dpo` with the shipped settings on the embedded 0.5B student: each within
    15 minutes on 2 CPU cores, printing the loss of every step. The data set is written from the
    repository's prompts (the answers are the reference answers of a tiny fixed set)."""
    import json as _json

    rows = [_json.loads(line) for line in (ROOT / "configs/prompts/default.jsonl").open()][:40]
    parts = tmp_path / "parts"
    parts.mkdir()
    sft, dpo = [], []
    for r in rows:
        user = {"role": "user", "content": r["prompt"]}
        good = {"role": "assistant", "content": f"Here is a careful answer to: {r['prompt']} " * 3}
        sft.append({"prompt_id": r["id"], "messages": [user, good], "source": "t", "method": "moa", "models": ["m"]})
        dpo.append({"prompt_id": r["id"], "prompt": [user], "chosen": [good],
                    "rejected": [{"role": "assistant", "content": "No."}], "score_chosen": 4.0, "score_rejected": 1.0,
                    "chosen_model": "m", "rejected_model": "m"})  # fmt: skip
    from moaa.dataset.versions import write_version

    for name, data in (("sft", sft), ("dpo", dpo)):
        (parts / f"{name}.jsonl").write_text("".join(_json.dumps(x) + "\n" for x in data))
    version = {"config": {"name": "prompts"}, "run_info": {}, "test_size": 0.2, "split_seed": 0,
               "license": "apache-2.0", "tags": []}  # fmt: skip
    write_version(tmp_path / "data", "prompts", {"sft": [parts / "sft.jsonl"], "dpo": [parts / "dpo.jsonl"]}, **version)
    where = f"--data prompts --data-root {tmp_path / 'data'} --runs-root {tmp_path / 'runs'}"
    code, seconds, out = _make("sft", where, tmp_path / "sft.log")
    assert code == 0, out[-3000:]
    assert seconds < 15 * 60 and out.count("'loss':") >= 20 and "sft: 30 rows of prompts@v1, 20 steps" in out
    code, seconds, out = _make("dpo", where, tmp_path / "dpo.log")
    assert code == 0, out[-3000:]
    assert seconds < 15 * 60 and out.count("'loss':") >= 10 and "dpo: 30 rows of prompts@v1, 10 steps" in out
    sft_run = next((tmp_path / "runs" / "sft").iterdir())
    dpo_run = next((tmp_path / "runs" / "dpo").iterdir())
    adapter = json.loads((dpo_run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(sft_run.resolve())
    assert "prompts@v1" in (dpo_run / "README.md").read_text()
