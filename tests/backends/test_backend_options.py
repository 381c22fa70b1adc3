"""Model options: each backend's declared options are its constructor's, and a misspelt one is one line."""

from __future__ import annotations

import inspect

import pytest

from seeinpairs.backend_options import BACKEND_OPTIONS
from seeinpairs.backends import BACKENDS, create_backend
from seeinpairs.errors import BackendError

#: constructor arguments that come from the model config's own fields or from code, not from ``options``
NOT_OPTIONS = {"self", "model", "dtype", "device", "batch_size", "transport"}


@pytest.mark.parametrize("name", BACKENDS.list_names())
def test_declared_options_are_the_constructor_keywords(name):
    """A new backend (or a new constructor keyword) without a declared option fails here."""
    assert name in BACKEND_OPTIONS, f"declare the options of backend '{name}' in seeinpairs.backend_options"
    parameters = inspect.signature(BACKENDS.get(name)).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert set(BACKEND_OPTIONS[name].model_fields) == set(parameters) - NOT_OPTIONS
    for option, field in BACKEND_OPTIONS[name].model_fields.items():
        assert field.default == parameters[option].default, option


@pytest.mark.parametrize("name, options, words", [
    ("hf", {"prefix_cach": True}, ["option 'prefix_cach'", "prefix_cache", "vision_cache_mb"]),
    ("hf", {"vision_cache_mb": -1}, ["option 'vision_cache_mb'", "greater than or equal to 0"]),
    ("openai_compat", {"base_ulr": "http://x"}, ["option 'base_ulr'", "base_url"]),
])
def test_create_backend_refuses_a_bad_option_before_loading(name, options, words):
    with pytest.raises(BackendError) as caught:
        create_backend({"backend": name, "name": "no-such-model", "options": options})
    for word in words:
        assert word in str(caught.value)


def test_remote_model_is_the_configs_name():
    """``backend: openai_compat, name: X`` serves model X (the name was not passed before)."""
    from seeinpairs.settings import ModelConfig

    config = ModelConfig(backend="openai_compat", name="served-model", options={"base_url": "http://fake/v1"})
    backend = create_backend(config)
    assert backend.model == "served-model" and backend.base_url == "http://fake/v1"


def test_run_key_holds_what_decides_predictions_and_no_secret(synthetic_data, tmp_path):
    """Concurrency, retries, the endpoint and the API key do not change a served model's predictions: they
    leave the run key alone and never reach runs.json; ``top_logprobs`` changes scores, so it is keyed."""
    from seeinpairs.evaluation.config import ExperimentConfig
    from seeinpairs.evaluation.runner import ExperimentRunner

    root, _, task = synthetic_data

    def key(**options):
        config = ExperimentConfig.from_dict({
            "name": "t", "task": task.model_dump(), "data": {"manifest": str(root / "manifest.csv")},
            "models": [{"backend": "openai_compat", "name": "served-model", "options": options}],
            "eval": {"split": "test", "conditions": [{"selector": "none", "k": 0}]},
            "output_dir": str(tmp_path / "out")})
        runner = ExperimentRunner(config, progress=False)
        return runner.condition_key(runner.conditions[0])

    base, description = key(base_url="http://a/v1", concurrency=4, api_key="sk-secret")
    assert key(base_url="http://b/v1", concurrency=16, max_retries=9, api_key="sk-other")[0] == base
    assert key(base_url="http://a/v1", top_logprobs=5)[0] != base
    assert "sk-secret" not in str(description) and "base_url" not in str(description)
