"""`moaa config explain|show` (moaa/commands/config.py), through moaa.cli.main as a user runs them."""

from __future__ import annotations

import pytest
import yaml

from moaa.cli import main
from moaa.commands.config import config_keys
from moaa.config import dump_public_config, load_config, parse_config
from tests.conftest import ROOT, base_raw


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path, **endpoint) -> str:
    raw = base_raw(tmp_path)
    raw["endpoints"]["test"] |= endpoint
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_one_key_shows_its_type_default_and_description(capsys):
    code, out, err = run(capsys, "config", "explain", "sft.aggregator.max_tokens")
    assert (code, err) == (0, "")
    assert out == (
        "sft.aggregator.max_tokens  int | null  default null\n"
        "    most tokens one answer may have; an answer cut there is `truncated` (see answers.truncated)\n"
    )


def test_a_section_shows_its_keys_and_no_others(capsys):
    code, out, _ = run(capsys, "config", "explain", "preference.scorer")
    heads = [line.split("  ")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert code == 0 and heads[0] == "preference.scorer"
    assert {
        "preference.scorer.kind",
        "preference.scorer.judges[].endpoint",
        "preference.scorer.weighted_ratings",
    } <= set(heads)
    assert all(h.startswith("preference.scorer") for h in heads)
    kind = out.splitlines()[2]
    kinds = '"reward_model" | "pointwise" | "pairwise" | "moa_judge" | "verifier"'
    assert kind == f'preference.scorer.kind  {kinds}  default "pointwise"'


def test_without_a_key_every_field_of_every_model_is_listed(capsys):
    code, out, _ = run(capsys, "config", "explain")
    heads = {line.split("  ")[0] for line in out.splitlines() if not line.startswith(" ")}
    assert code == 0 and heads == {k.path for k in config_keys()}
    for path in ("name", "endpoints.<name>.sampling.top_logprobs", "sft.smoa.moderator.role", "answers.truncated",
                 "sft.proposers[].endpoint", "run.min_prompts_for_failure_rate", "cache.path"):  # fmt: skip
        assert path in heads
    assert "endpoints.<name>.model  str  required" in out.splitlines()


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("sft.proposers.0.temperature", "sft.proposers[].temperature"),
        ("sft.proposers[0].temperature", "sft.proposers[].temperature"),
        ("sft.proposers.temperature", "sft.proposers[].temperature"),
        ("endpoints.local.max_retries", "endpoints.<name>.max_retries"),
    ],
)
def test_keys_are_written_as_for_set(capsys, key, canonical):
    code, out, _ = run(capsys, "config", "explain", key)
    assert code == 0 and out.splitlines()[0].startswith(f"{canonical}  ")


def test_values_come_from_the_resolved_config(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, _ = run(capsys, "config", "explain", "prompts.limit", "--config", config, "--set", "prompts.limit=7")
    assert code == 0
    assert out.splitlines() == [
        f"# values from {config} (extends and --set applied)",
        "prompts.limit  int | null  default null",
        "    use at most this many prompts, a seeded sample of those kept; unset: all",
        "    value: 7",
    ]
    code, out, _ = run(capsys, "config", "explain", "sft.proposers.1.temperature", "--config", config,
                       "--set", "sft.proposers.1.temperature=0.1")  # fmt: skip
    assert out.splitlines()[-1] == "    sft.proposers[1].temperature: 0.1"
    code, out, _ = run(capsys, "config", "explain", "sft.proposers.temperature", "--config", config)
    assert out.splitlines()[-3:] == [f"    sft.proposers[{i}].temperature: 0.7" for i in range(3)]
    code, out, _ = run(capsys, "config", "explain", "sft.smoa.moderator", "--config", config)
    assert out.splitlines()[3] == "    value: null"  # the section is unset; its keys have no value
    assert "    value: (none in this config: a section above it is unset or empty)" in out


def test_a_preset_with_extends_resolves(capsys):
    """moa-lite.yaml extends together.yaml: the values are the merged config's, with defaults set at load."""
    preset = str(ROOT / "configs/moa-lite.yaml")
    resolved = load_config(preset)
    name = resolved.sft.aggregator.endpoint
    for key, last in [
        ("sft.layers", "    value: 2"),  # moa-lite's layers, set by the validator
        ("sft.aggregator.endpoint", f'    value: "{name}"'),
        (f"endpoints.{name}.model", f'    endpoints.{name}.model: "{resolved.endpoints[name].model}"'),
    ]:
        code, out, _ = run(capsys, "config", "explain", key, "--config", preset)
        assert (code, out.splitlines()[-1]) == (0, last)


def test_values_never_show_a_key_or_url_credentials(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOAA_TEST_API_KEY", "sk-live-0123456789abcdef")
    config = write_config(tmp_path, api_key_env="MOAA_TEST_API_KEY")
    mirror = "description=see http://user:s3cret-pass@example.com/x"
    for argv in (["explain", "endpoints", "--config", config], ["show", config, "--set", mirror]):
        code, out, _ = run(capsys, "config", *argv)
        assert code == 0 and "MOAA_TEST_API_KEY" in out
        assert "sk-live" not in out and "s3cret" not in out and "127.0.0.1:9/v1" in out
    # Credentials in a base_url are refused at load (never sent, never shown).
    refused = write_config(tmp_path, base_url="http://user:s3cret-pass@127.0.0.1:9/v1")
    code, out, err = run(capsys, "config", "show", refused)
    assert code == 2 and "endpoints.test.base_url: holds credentials" in err and "s3cret" not in out + err


def test_show_prints_the_config_a_run_writes(tmp_path, capsys):
    config = write_config(tmp_path)
    code, out, _ = run(capsys, "config", "show", config, "--set", "sft.layers=3")
    resolved = load_config(config, ["sft.layers=3"])
    assert code == 0 and yaml.safe_load(out) == dump_public_config(resolved)
    assert parse_config(yaml.safe_load(out)) == resolved  # it loads back as the same config


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "sft.agregator.max_tokens",
            "unknown config key 'sft.agregator.max_tokens'; nearest valid keys: sft.aggregator.max_tokens, "
            "sft.smoa.role_generator.max_tokens, sft.smoa.moderator.max_tokens",
        ),
        (
            "preference.scorer.judges.0.temprature",
            "unknown config key 'preference.scorer.judges.0.temprature'; nearest valid keys: "
            "preference.scorer.judges[].temperature, preference.scorer.judges[].stop, preference.scorer.judges[].seed",
        ),
        (
            "zzz",
            "unknown config key 'zzz'; nearest valid keys: name, description, endpoints, prompts, instructions, sft, "
            "preference, output, run, cache, answers, verify",
        ),
    ],
)
def test_an_unknown_key_is_one_line_naming_the_nearest(capsys, key, message):
    code, out, err = run(capsys, "config", "explain", key)
    assert (code, out, err) == (2, "", f"error: {message}\n")  # one line, no traceback


def test_an_unknown_key_fails_before_the_config_is_read(capsys):
    code, _, err = run(capsys, "config", "explain", "nope", "--config", "missing.yaml")
    assert code == 2 and err.startswith("error: unknown config key 'nope'")
    code, _, err = run(capsys, "config", "explain", "sft", "--set", "sft.layers=3")
    assert (code, err) == (2, "error: --set changes a config: pass --config FILE with it\n")


def test_run_help_points_to_explain(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "moaa config explain" in capsys.readouterr().out
