"""One door per backend: every registered backend is built from a model config by ``create_backend``;
tiny models and checkpoint identity are settled in backends/; each score says how it was found."""

from __future__ import annotations

import numpy as np
import pytest
from test_hf import make_request

from seeinpairs.backends import (BACKENDS, Backend, Scored, concrete_model, content_identity, create_backend,
                                 local_backend)
from seeinpairs.backends.sources import checkpoint_fingerprint, process_device
from seeinpairs.errors import BackendError
from seeinpairs.settings import ModelConfig


def config_for(name: str, tiny_models) -> ModelConfig:
    """A model config each registered backend can be built from without a server or a download."""
    fields = {"hf": {"name": str(tiny_models["qwen2_vl"]), "device": "cpu", "batch_size": 3},
              "openai_compat": {"name": "served-model", "options": {"base_url": "http://fake/v1"}}}
    assert name in fields, f"give backend '{name}' a buildable config here"
    return ModelConfig(backend=name, **fields[name])


@pytest.mark.parametrize("name", BACKENDS.list_names())
def test_every_registered_backend_builds_itself_from_a_model_config(name, tiny_models):
    config = config_for(name, tiny_models)
    backend = create_backend(config)
    assert isinstance(backend, Backend) and backend.kind == name
    assert create_backend(config.model_dump()).identity() == backend.identity()  # a mapping of the same fields
    assert content_identity(config) == checkpoint_fingerprint(str(config.name))


def test_a_bad_field_or_option_is_one_line_before_anything_loads():
    with pytest.raises(BackendError, match=r"^model: field 'dtype': .*string") as caught:
        create_backend({"name": "no-such-model", "dtype": 3})
    assert "\n" not in str(caught.value)
    with pytest.raises(BackendError, match="backend 'openai_compat': option 'base_ulr'"):
        create_backend({"backend": "openai_compat", "name": "m", "options": {"base_ulr": "http://x"}})


def test_a_tiny_model_is_built_once_and_then_named_by_its_folder(tmp_path):
    tiny = ModelConfig(tiny="qwen2_vl", tiny_seed=1, device="cpu")
    with pytest.raises(BackendError, match="built before its backend"):
        create_backend(tiny)
    built = concrete_model(tiny, tmp_path, texts=["normal", "abnormal"])
    assert built.tiny is None and built.display == tiny.display == "tiny-qwen2_vl-1"
    assert built.name == str(tmp_path / "tiny-qwen2_vl-s1")
    weights = sorted(tmp_path.rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    again = concrete_model(tiny, tmp_path, texts=["normal", "abnormal"])
    assert again == built and [p.stat().st_mtime_ns for p in weights] == stamps  # found, not rebuilt
    assert content_identity(built) == checkpoint_fingerprint(built.name) != built.name  # the folder's content
    assert create_backend(built).identity()["fingerprint"] == content_identity(built)


def test_each_process_of_a_launch_takes_its_own_gpu_only_where_asked():
    import torch

    assert process_device("cpu", 1) == "cpu"
    assert process_device("cuda:0", 1) == ("cuda:1" if torch.cuda.is_available() else "cuda:0")
    assert process_device("auto", 2) == ("cuda:2" if torch.cuda.is_available() else "auto")
    served = ModelConfig(backend="openai_compat", name="m", device="cpu")
    assert concrete_model(served, None, local_rank=1) == served  # a served model: nothing to build or place


def test_features_that_need_local_weights_refuse_a_served_model_in_one_line():
    served = ModelConfig(backend="openai_compat", name="served-model", options={"base_url": "http://fake/v1"})
    with pytest.raises(BackendError, match="^model 'served-model': attribution needs the model's weights") as caught:
        local_backend(served, "attribution")
    assert "\n" not in str(caught.value)


def test_hf_scores_say_which_path_computed_them_and_agree(tiny_models):
    """One-token options: one pass of the prompt (or the prefix cache); longer options: the shared prompt.
    Every path gives the per-option scores; with a cache asked for, ``how`` records the method each took."""
    backend = create_backend({"name": str(tiny_models["qwen2_vl"]), "device": "cpu", "batch_size": 4,
                              "options": {"prefix_cache": True}})
    rng = np.random.default_rng(5)
    shared = make_request(rng, 1)
    twin = make_request(rng, 1)
    twin = type(twin)(messages=twin.messages, images=[shared.images[0], twin.images[1]], options=twin.options)
    requests = [shared, twin, make_request(rng, 2), make_request(rng, 1, ("normal", "abnormal opacity"))]
    scored = backend.score(requests)
    assert all(isinstance(s, Scored) for s in scored)
    assert [s.path for s in scored] == ["prefix-cache", "prefix-cache", "next-token", "shared-prompt"]
    assert [s.how["method"] for s in scored] == [s.path for s in scored]
    backend.single_pass = False
    reference = backend.score(requests)
    assert [s.path for s in reference] == ["per-option"] * 4
    for fast, slow in zip(scored, reference):
        assert np.max(np.abs(np.array(fast.log_likelihoods) - np.array(slow.log_likelihoods))) < 1e-4
    assert backend.score_options(requests) == [s.log_likelihoods for s in reference]
