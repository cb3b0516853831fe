"""Config: strict keys with dotted paths, overrides, extends, endpoint references, secrets, field help."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

import moaa.config
from moaa.config import (
    MoaaConfig,
    Sampling,
    apply_override,
    check_environment,
    dump_config,
    dump_public_config,
    load_config,
    resolve_api_key,
)
from moaa.errors import ConfigError
from tests.conftest import ROOT, base_raw, make_config


def write(tmp_path: Path, data, name="c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _shape(config) -> dict:
    gen = config.sft
    models = [config.endpoints[p.endpoint].model for p in gen.proposers]
    shape = {"method": gen.method, "proposers": len(models), "distinct_models": len(set(models))}
    if gen.method in ("moa", "moa-lite"):
        shape["layers"] = gen.layers
    if gen.method == "self-moa":
        shape["samples"] = gen.self_moa.samples
    if gen.method == "self-moa-seq":
        shape |= {"samples": gen.seq.samples, "window": gen.seq.window, "new_per_step": gen.seq.new_per_step}
    if gen.method == "smoa":
        shape |= {"rounds": gen.smoa.rounds, "k": gen.smoa.k, "early_stop": gen.smoa.early_stop}
    return shape


# The published shapes (ALGORITHMS.md): MoA 3 layers of 4 proposers with a fifth model aggregating (the
# paper's Qwen1.5-110B is no longer served: configs/together.yaml has current models);
# MoA-Lite 2 layers; Self-MoA 6 samples of one model; Seq window 6 with 3 new per step; SMoA 2 rounds, k=2.
PRESETS = {
    "local": {"method": "moa", "proposers": 3, "distinct_models": 1, "layers": 2},
    "moa": {"method": "moa", "proposers": 4, "distinct_models": 4, "layers": 3},
    "moa-lite": {"method": "moa-lite", "proposers": 4, "distinct_models": 4, "layers": 2},
    "self-moa": {"method": "self-moa", "proposers": 1, "distinct_models": 1, "samples": 6},
    "self-moa-seq": {"method": "self-moa-seq", "proposers": 1, "distinct_models": 1, "samples": 12, "window": 6,
                     "new_per_step": 3},
    "smoa": {"method": "smoa", "proposers": 4, "distinct_models": 1, "rounds": 2, "k": 2, "early_stop": True},
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_load_with_their_published_shape(preset):
    config = load_config(ROOT / "configs" / f"{preset}.yaml")
    assert _shape(config) == PRESETS[preset]
    if preset == "moa":
        aggregator = config.endpoints[config.sft.aggregator.endpoint].model
        assert aggregator.startswith("Qwen/Qwen3") and aggregator not in {
            config.endpoints[p.endpoint].model for p in config.sft.proposers
        }
    if preset == "local":
        assert all(config.endpoints[name].local for name in config.used_endpoints())


def test_unknown_key_names_dotted_path_and_allowed_keys(tmp_path):
    raw = base_raw(tmp_path)
    raw["sft"]["proposers"][0] = {"endpoint": "test", "temprature": 0.5}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, raw))
    msg = str(err.value)
    assert "unknown key 'sft.proposers[0].temprature'" in msg
    assert "temperature" in msg and "endpoint" in msg and "\n" not in msg


def test_wrong_type_names_field(tmp_path):
    with pytest.raises(ConfigError, match=r"sft.layers: .*integer.*\(got 'three'\)"):
        load_config(write(tmp_path, base_raw(tmp_path)), ["sft.layers=three"])


def test_unknown_endpoint(tmp_path):
    with pytest.raises(
        ConfigError, match=r"sft.aggregator.endpoint: unknown endpoint 'gpt' \(defined under endpoints: test\)"
    ):
        load_config(write(tmp_path, base_raw(tmp_path)), ["sft.aggregator.endpoint=gpt"])


def test_an_endpoint_name_with_a_dot_fails_at_load(tmp_path):
    """`--set endpoints.NAME.key=...` and `moaa config explain` split keys at dots: such a name could not be set."""
    raw = base_raw(tmp_path)
    raw["endpoints"] = {"test.v1": raw["endpoints"]["test"]}
    with pytest.raises(ConfigError, match=r"endpoints: endpoint name 'test.v1' may hold .* rename it, e.g. 'test-v1'"):
        load_config(write(tmp_path, raw))


def test_malformed_yaml_has_line(tmp_path):
    path = write(tmp_path, "name: x\nendpoints: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+:\d+: malformed YAML"):
        load_config(path)


def test_overrides_parse_values_and_index_lists(tmp_path):
    raw = base_raw(tmp_path)
    apply_override(raw, "sft.layers=3")
    apply_override(raw, "sft.proposers.1.temperature=0.1")
    apply_override(raw, "output.tags=[a, b]")
    config = make_config(
        tmp_path, "http://x/v1", "sft.layers=3", "sft.proposers.1.temperature=0.1", "output.tags=[a, b]"
    )
    assert raw["sft"]["layers"] == 3 and config.sft.layers == 3
    assert config.sft.proposers[1].temperature == 0.1 and config.sft.proposers[0].temperature == 0.7
    assert config.output.tags == ["a", "b"]
    with pytest.raises(ConfigError, match="needs a list index below 3"):
        apply_override(raw, "sft.proposers.7.temperature=1")
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_override(raw, "novalue")


def test_extends_merges_parent(tmp_path):
    write(tmp_path, {"endpoints": base_raw(tmp_path)["endpoints"], "prompts": {"path": "p.jsonl"}}, "base.yaml")
    child = base_raw(tmp_path)
    del child["endpoints"]
    child["extends"] = "base.yaml"
    config = load_config(write(tmp_path, child))
    assert config.endpoints["test"].model == "test-model"


def test_api_key_env_missing_and_present(tmp_path, monkeypatch):
    config = make_config(tmp_path, "http://x/v1", "endpoints.test.api_key_env=MOAA_TEST_KEY")
    monkeypatch.delenv("MOAA_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable MOAA_TEST_KEY is not set"):
        check_environment(config)
    monkeypatch.setenv("MOAA_TEST_KEY", "sk-secret-123")
    assert resolve_api_key("test", config.endpoints["test"]) == "sk-secret-123"
    assert "sk-secret-123" not in str(dump_config(config))


def test_local_endpoint_defaults_match_server():
    config = load_config(ROOT / "configs/local.yaml")
    local = config.endpoints["local"]
    assert (local.max_concurrency, local.supports_n, local.json_schema) == (4, False, True)
    assert local.json_schema_style == "llama.cpp"  # llama.cpp's own response_format shape (it reads OpenAI's too)


def test_sampling_over_prefers_set_fields():
    base = Sampling(temperature=0.7, max_tokens=100)
    assert Sampling(temperature=0.1).over(base).sampling_dict() == {
        "temperature": 0.1,
        "top_p": None,
        "max_tokens": 100,
        "seed": None,
        "stop": None,
        "top_logprobs": None,
        "extra_body": None,
    }


def test_moa_layers_default_to_the_papers_three_and_moa_lite_to_two(tmp_path):
    raw = base_raw(tmp_path, "http://x/v1")
    del raw["sft"]["layers"]
    assert load_config(write(tmp_path, raw)).sft.layers == 3
    assert load_config(write(tmp_path, raw), ["sft.method=moa-lite"]).sft.layers == 2
    assert load_config(write(tmp_path, raw), ["sft.method=moa-lite", "sft.layers=2"]).sft.layers == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sft.method=moa-lite", "sft.layers=5"], "sft.layers: method 'moa-lite' always has 2 layers (got 5)"),
        (["sft.layers=1"], "sft.layers: method 'moa' needs layers >= 2 (got 1); use method single"),
        (["sft.method=smoa", "sft.smoa.k=10"], "sft.smoa.k: the moderator picks 10 of 3 proposers' answers"),
        (["endpoints.test.base_url=not-a-url"], "endpoints.test.base_url: 'not-a-url' is not an http(s) URL"),
        (["endpoints.test.base_url=ftp://x/v1"], "endpoints.test.base_url: 'ftp://x/v1' is not an http(s) URL"),
        (["endpoints.test.base_url=http://:80/v1"], "is not an http(s) URL"),
        (["endpoints.test.base_url=[http://a/v1, 'localhost:8000']"], "'localhost:8000' is not an http(s) URL"),
        (
            ["preference.enabled=true", "preference.policy={endpoint: test}"],
            "preference.scorer.judges: kind pointwise needs at least one judge agent",
        ),
        (
            ["preference.enabled=true", "preference.policy={endpoint: test}", "preference.scorer.kind=reward_model"],
            "preference.scorer.reward_model: required for kind reward_model",
        ),
        (["preference.enabled=true"], "preference.policy: preference.enabled needs a policy"),
        (
            ["output.publish_repo_id=demo"],
            "output.publish_repo_id: repo id is invalid; use ORG/NAME (e.g. my-org/moa-sft) (got 'demo')",
        ),
    ],
)
def test_shape_rules_fail_at_load_with_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, base_raw(tmp_path, "http://x/v1")), overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_moa_preset_with_one_layer_fails_at_load():
    with pytest.raises(ConfigError, match=r"configs/moa.yaml: sft.layers: method 'moa' needs layers >= 2 \(got 1\)"):
        load_config(ROOT / "configs/moa.yaml", ["sft.layers=1"])


def test_credentials_in_a_bad_url_are_not_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, base_raw(tmp_path, "http://x/v1")), ["endpoints.test.base_url=user:s3cret@host"])
    assert "s3cret" not in str(err.value) and "is not an http(s) URL" in str(err.value)


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("missing.yaml", "child.yaml:3: extends: missing.yaml not found"),
        ("[a, b]", "child.yaml:3: extends: expected the path of another YAML file"),
        ("child.yaml", "child.yaml:3: extends: child.yaml loops back"),
    ],
)
def test_extends_errors_name_the_line(tmp_path, extends, message):
    child = tmp_path / "child.yaml"
    child.write_text(f"# a child config\nname: x\nextends: {extends}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".yaml", r"\.yaml")):
        load_config(child)


def test_a_config_rebuilt_from_its_dump_checks_endpoint_references_too(tmp_path):
    """A shard or loop step validates the dumped config itself; a dangling endpoint fails there as at load."""
    data = dump_public_config(make_config(tmp_path))
    data["sft"]["proposers"][1]["endpoint"] = "gone"
    with pytest.raises(ValidationError, match=r"sft.proposers\[1\].endpoint: unknown endpoint 'gone'"):
        MoaaConfig.model_validate(data)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, base_raw(tmp_path)), ["sft.proposers.1.endpoint=gone"])
    assert str(err.value).endswith(
        ": sft.proposers[1].endpoint: unknown endpoint 'gone' (defined under endpoints: test)"
    )


CONFIG_MODELS = sorted(
    (m for m in vars(moaa.config).values() if isinstance(m, type) and issubclass(m, BaseModel)
     and m.__module__.startswith("moaa.config") and m.model_fields),
    key=lambda m: m.__name__,
)  # fmt: skip


def test_every_config_model_is_checked():
    names = {m.__name__ for m in CONFIG_MODELS}
    assert {"Sampling", "EndpointConfig", "AgentConfig", "GenerationConfig", "ScorerConfig", "MoaaConfig"} <= names
    assert len(names) == 27  # a new model joins this test by itself; the count says when one left


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_description(model):
    """`moaa config explain` shows these; a field without one has no help."""
    missing = [
        f"{model.__name__}.{name}" for name, info in model.model_fields.items() if not (info.description or "").strip()
    ]
    assert missing == []
