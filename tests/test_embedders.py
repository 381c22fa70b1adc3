"""Embedders: the pixel baseline, spec parsing, optional libraries and an offline tiny ViT."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from seeinpairs.cases import Case
from seeinpairs.embeddings.images import (EMBEDDERS, Embedder, PixelEmbedder, create_embedder, embedder_key,
                                          list_embedders)
from seeinpairs.errors import ConfigError, RegistryError
from seeinpairs.references import ReferenceBank, create_selector


def _images(n: int, size: int = 24, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_registry_lists_all_embedders():
    assert set(list_embedders()) == {"pixel", "hf", "timm", "open_clip"}
    assert "pixel" in EMBEDDERS


def test_pixel_embedder_is_deterministic_and_normalised():
    embedder = create_embedder("pixel")
    assert isinstance(embedder, PixelEmbedder) and embedder.dim == 32 * 32 + 32
    images = _images(5)
    vectors = embedder.embed(images)
    _assert_unit_rows(vectors, 5, embedder.dim)
    np.testing.assert_array_equal(vectors, create_embedder("pixel").embed(images))
    assert not np.allclose(vectors[0], vectors[1])
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_pixel_embedder_handles_constant_and_non_rgb_images():
    embedder = PixelEmbedder(size=8, bins=8, batch_size=2)
    images = [Image.new("RGB", (10, 10), (0, 0, 0)), Image.new("L", (10, 10), 200), Image.new("RGBA", (5, 7))]
    vectors = embedder.embed(images)
    assert np.isfinite(vectors).all()
    _assert_unit_rows(vectors, 3, 8 * 8 + 8)


def test_pixel_identity_separates_configurations():
    assert embedder_key(PixelEmbedder()) == embedder_key(PixelEmbedder())
    assert embedder_key(PixelEmbedder()) != embedder_key(PixelEmbedder(size=16))
    with pytest.raises(ConfigError, match="bins >= 2"):
        PixelEmbedder(bins=1)


def test_create_embedder_spec_errors():
    instance = PixelEmbedder()
    assert create_embedder(instance) is instance
    with pytest.raises(RegistryError, match="unknown embedder 'clip'"):
        create_embedder("clip:foo")
    with pytest.raises(ConfigError, match="needs a hub id or local path"):
        create_embedder("hf:")
    with pytest.raises(ConfigError, match="takes no argument"):
        create_embedder("pixel:big")
    with pytest.raises(ConfigError, match="non-empty string"):
        create_embedder("")


@pytest.mark.parametrize(
    ("spec", "module", "package"),
    [("timm:resnet50", "timm", "timm"), ("open_clip:ViT-B-32", "open_clip", "open_clip_torch")],
)
def test_optional_libraries_missing_give_one_line_error(monkeypatch, spec, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail even if installed
    with pytest.raises(ConfigError) as info:
        create_embedder(spec)
    message = str(info.value)
    assert f"needs the '{package}' package" in message and "\n" not in message


# -- hf: an offline tiny ViT ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> str:
    """A randomly initialised 1-layer ViT saved locally with a PIL image processor."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    transformers.ViTModel(config).save_pretrained(folder)
    processor_class = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    processor_class(size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_hf_embedder_offline(tiny_vit):
    embedder = create_embedder(f"hf:{tiny_vit}", device="cpu", batch_size=2)
    assert isinstance(embedder, Embedder) and embedder.dim == 32
    assert type(embedder.processor).__name__.startswith("ViTImageProcessor")
    images = _images(5, size=40)
    vectors = embedder.embed(images)
    _assert_unit_rows(vectors, 5, 32)
    # batching does not change the result, and the model is deterministic
    one_batch = create_embedder(f"hf:{tiny_vit}", device="cpu", batch_size=8).embed(images)
    np.testing.assert_allclose(vectors, one_batch, atol=1e-5)
    identity = embedder.identity()
    assert identity["model"] == tiny_vit and identity["fingerprint"] and identity["pooling"] == "auto"


def test_hf_embedder_pooling_options(tiny_vit):
    images = _images(2, size=32)
    auto = create_embedder(f"hf:{tiny_vit}", device="cpu")
    mean = create_embedder(f"hf:{tiny_vit}", device="cpu", pooling="mean")
    cls = create_embedder(f"hf:{tiny_vit}", device="cpu", pooling="cls")
    for embedder in (mean, cls):
        _assert_unit_rows(embedder.embed(images), 2, 32)
    assert embedder_key(auto) != embedder_key(mean)
    assert not np.allclose(auto.embed(images), mean.embed(images))
    with pytest.raises(ConfigError, match="pooling 'max'"):
        create_embedder(f"hf:{tiny_vit}", pooling="max")


def test_hf_embedder_drives_the_embedding_selector(tiny_vit, tmp_path):
    embedder = create_embedder(f"hf:{tiny_vit}", device="cpu")
    paths = []
    for i, image in enumerate(_images(6, size=32, seed=3)):
        paths.append(str(tmp_path / f"r{i}.png"))
        image.save(paths[-1])
    bank = ReferenceBank([Case(f"r{i}", (p,), "normal", f"p{i}") for i, p in enumerate(paths)], cache_dir=tmp_path / "cache")
    query = Case("q", (paths[2],), "abnormal", "pq")  # same file as r2, so r2 is excluded
    selection = create_selector("embedding", bank, embedder=embedder).select(query, 3, np.random.default_rng(0))
    assert len(selection.case_ids) == 3 and "r2" not in selection.case_ids
    scores = bank.embeddings(embedder) @ bank.embed_query(query, embedder)
    expected = [f"r{j}" for j in np.argsort(-scores, kind="stable") if j != 2][:3]
    assert selection.case_ids == expected


def test_hf_embedder_missing_model_is_a_clear_error(tmp_path):
    from seeinpairs.errors import SeeInPairsError

    with pytest.raises(ConfigError, match="local model folder .* not found") as info:
        create_embedder(f"hf:{tmp_path / 'nothing-here'}")
    assert isinstance(info.value, SeeInPairsError) and "\n" not in str(info.value)
