"""Run configuration: strict pydantic models loaded from YAML, with `--set dotted.key=value` overrides.

A config names its endpoints (model servers) once and refers to them by name everywhere else.
Secrets never live here: an endpoint names the environment variable that holds its key.

Endpoints and agents live in `moaa.config.endpoints`, the SFT stage and each generation method's
config rule in `moaa.config.sft_methods`, the preference stage (its scorer and pairing) in
`moaa.config.preference_stage`, the rest of the models in `moaa.config.models`, checking answers in
`moaa.config.verify`, loading and dumping in `moaa.config.loading`; import them from `moaa.config`.
"""

from moaa.config.endpoints import (
    AgentConfig,
    BatchConfig,
    EndpointConfig,
    Sampling,
    Strict,
    is_variable_name,
)
from moaa.config.loading import (
    apply_override,
    check_environment,
    deep_merge,
    describe_validation_error,
    dump_config,
    dump_public_config,
    load_config,
    missing_keys,
    parse_config,
    refuse_stored_secrets,
    resolve_api_key,
)
from moaa.config.models import (
    REPO_ID,
    SYNTHESIZED,
    AgreementConfig,
    AnswersConfig,
    CacheConfig,
    InstructionsConfig,
    MoaaConfig,
    OutputConfig,
    PromptSourceConfig,
    RunSettings,
)
from moaa.config.pools import MIXTURE, CandidateConfig, DeltaConfig, PairingConfig, PoolMember
from moaa.config.preference_stage import PreferenceConfig, ScorerConfig
from moaa.config.sft_methods import GenerationConfig, QualityConfig, SelfMoAConfig, SeqConfig, SMoAConfig
from moaa.config.verify import (
    ReferenceColumns,
    SandboxConfig,
    SFTVerifyConfig,
    VerifierScorerConfig,
    VerifyConfig,
)

__all__ = [
    "MIXTURE",
    "REPO_ID",
    "SYNTHESIZED",
    "AgentConfig",
    "AgreementConfig",
    "AnswersConfig",
    "BatchConfig",
    "CacheConfig",
    "CandidateConfig",
    "DeltaConfig",
    "EndpointConfig",
    "GenerationConfig",
    "InstructionsConfig",
    "MoaaConfig",
    "OutputConfig",
    "PairingConfig",
    "PoolMember",
    "PreferenceConfig",
    "PromptSourceConfig",
    "QualityConfig",
    "ReferenceColumns",
    "RunSettings",
    "SFTVerifyConfig",
    "SMoAConfig",
    "Sampling",
    "SandboxConfig",
    "ScorerConfig",
    "SelfMoAConfig",
    "SeqConfig",
    "Strict",
    "VerifierScorerConfig",
    "VerifyConfig",
    "apply_override",
    "check_environment",
    "deep_merge",
    "describe_validation_error",
    "dump_config",
    "dump_public_config",
    "is_variable_name",
    "load_config",
    "missing_keys",
    "parse_config",
    "refuse_stored_secrets",
    "resolve_api_key",
]
