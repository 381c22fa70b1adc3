"""Image embedders: map images to L2-normalised vectors for reference retrieval.

Retrieval-based reference selection ("show the VLM the healthy images that look
most like the query") needs a vector per image. Every embedder returns float32
rows of unit length, so an inner product is a cosine similarity and a faiss
``IndexFlatIP`` gives exact nearest neighbours. ``identity()`` names everything
that changes the vectors, so cached embeddings are never reused across models.

Specs are strings so configs stay plain text: ``pixel`` (offline baseline),
``hf:<hub id or local path>``, ``timm:<name>``, ``open_clip:<name>``. Heavy
libraries are imported only when their embedder is created.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import BackendError, ConfigError
from ..registry import Registry

__all__ = [
    "EMBEDDERS",
    "Embedder",
    "HFEmbedder",
    "OpenClipEmbedder",
    "PixelEmbedder",
    "TimmEmbedder",
    "create_embedder",
    "embedder_key",
    "l2_normalise",
    "list_embedders",
]



def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows; all-zero rows stay zero instead of becoming NaN."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


class Embedder:
    """Base class: subclasses set ``name`` and ``dim`` and implement ``_embed_batch``.

    ``embed`` handles batching, the empty input and normalisation once, so an
    implementation only turns one batch of RGB images into raw vectors.
    """

    name: str = "embedder"
    dim: int = 0
    batch_size: int = 32

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images as float32 ``(n, dim)`` rows of unit L2 norm."""
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(images), max(1, self.batch_size)):
            batch = [img.convert("RGB") if img.mode != "RGB" else img for img in images[start:start + self.batch_size]]
            chunks.append(np.asarray(self._embed_batch(batch), dtype=np.float32).reshape(len(batch), -1))
        vectors = l2_normalise(np.concatenate(chunks, axis=0))
        if vectors.shape[1] != self.dim:
            raise BackendError(f"embedder '{self.name}' returned {vectors.shape[1]}-d vectors, expected {self.dim}")
        return vectors

    def _embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """Everything that determines the vectors; the key of embedding caches."""
        return {"name": self.name, "dim": self.dim}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"


#: by spec kind (``pixel``, ``hf:<model>``, ...); names are per instance, so not checked against the entry
EMBEDDERS: Registry[Embedder] = Registry("embedder", expects=Embedder)


def embedder_key(embedder: Embedder) -> str:
    """A short stable hash of ``embedder.identity()``, safe as a folder name."""
    text = json.dumps(embedder.identity(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# pixel: the dependency-free baseline


@EMBEDDERS.register("pixel")
class PixelEmbedder(Embedder):
    """Grayscale thumbnail + intensity histogram: a deterministic offline baseline.

    The thumbnail captures layout (where bright and dark structures are), the
    histogram captures exposure and contrast. Each part is standardised and
    scaled to unit norm before concatenation so that the 32 histogram bins
    weigh as much as the 1024 thumbnail pixels.
    """

    def __init__(self, size: int = 32, bins: int = 32, batch_size: int = 64) -> None:
        if size < 1 or bins < 2:
            raise ConfigError(f"pixel embedder: size must be >= 1 and bins >= 2 (got size={size}, bins={bins})")
        self.size = int(size)
        self.bins = int(bins)
        self.batch_size = int(batch_size)
        self.name = "pixel"
        self.dim = self.size * self.size + self.bins

    @staticmethod
    def _standardise(part: np.ndarray) -> np.ndarray:
        part = part - part.mean()
        std = part.std()
        if std > 0:
            part = part / std
        return part / np.sqrt(part.size)

    def _embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            gray = image.convert("L")
            thumb = np.asarray(gray.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
            hist, _ = np.histogram(np.asarray(gray), bins=self.bins, range=(0, 256))
            hist = hist.astype(np.float64) / max(1, hist.sum())
            rows.append(np.concatenate([self._standardise(thumb.ravel()), self._standardise(hist)]))
        return np.stack(rows)

    def identity(self) -> dict[str, Any]:
        return {"name": "pixel", "version": 1, "size": self.size, "bins": self.bins}


# ---------------------------------------------------------------------------
# hf: any transformers vision model


def _resolve_device(device: str | None) -> str:
    import torch

    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_image_processor(model_id: str, revision: str | None, trust_remote_code: bool) -> Any:
    """AutoImageProcessor, falling back to the PIL backend when torchvision is absent.

    transformers 5 defaults to torchvision-backed processors; CPU-only installs
    without torchvision still work through the ``*Pil`` classes.
    """
    from transformers import AutoImageProcessor
    from transformers.image_processing_base import ImageProcessingMixin

    attempts: list[dict[str, Any]] = [{}, {"backend": "pil"}, {"use_fast": False}]
    last: Exception | None = None
    for extra in attempts:
        try:
            processor = AutoImageProcessor.from_pretrained(
                model_id, revision=revision, trust_remote_code=trust_remote_code, **extra
            )
        except (ImportError, ValueError, TypeError) as exc:
            last = exc
            continue
        except OSError as exc:
            raise BackendError(f"embedder 'hf:{model_id}': cannot load image processor ({_first_line(exc)})") from None
        processor = getattr(processor, "image_processor", processor)
        if not isinstance(processor, ImageProcessingMixin) or not callable(processor):
            raise BackendError(
                f"embedder 'hf:{model_id}': expected an image processor, got {type(processor).__name__}"
            )
        return processor
    raise BackendError(f"embedder 'hf:{model_id}': cannot load image processor ({_first_line(last)})")


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@EMBEDDERS.register("hf")
class HFEmbedder(Embedder):
    """A transformers vision model (ViT, DINOv2, CLIP, SigLIP, ResNet, ...).

    ``pooling``: ``auto`` uses ``get_image_features`` for dual encoders (CLIP,
    SigLIP), else the model's pooled output, else the token/spatial mean;
    ``mean`` and ``cls`` force the mean of, or the first of, the last hidden
    states.
    """

    POOLINGS = ("auto", "pooler", "mean", "cls")

    def __init__(
        self,
        model_id: str,
        pooling: str = "auto",
        device: str | None = None,
        batch_size: int = 16,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if pooling not in self.POOLINGS:
            raise ConfigError(f"embedder 'hf:{model_id}': pooling '{pooling}' is not one of {list(self.POOLINGS)}")
        try:
            import torch  # noqa: F401
            from transformers import AutoModel

            from ..backends.sources import checkpoint_fingerprint
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise ConfigError(f"embedder 'hf:{model_id}' needs torch and transformers ({_first_line(exc)})") from None
        local = Path(model_id).expanduser()
        if model_id.startswith(("/", "./", "../", "~")) and not local.is_dir():
            raise ConfigError(f"embedder 'hf:{model_id}': local model folder '{local}' not found")
        self.model_id = model_id
        self.pooling = pooling
        self.revision = revision
        self.batch_size = int(batch_size)
        self.device = _resolve_device(device)
        self.name = f"hf:{model_id}"
        self.processor = load_image_processor(model_id, revision, trust_remote_code)
        try:
            model = AutoModel.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise BackendError(f"embedder 'hf:{model_id}': cannot load model ({_first_line(exc)})") from None
        self.model = model.eval().to(self.device)
        self._fingerprint = checkpoint_fingerprint(str(local)) if local.is_dir() else getattr(model.config, "_commit_hash", None)
        # One forward pass on a blank image fixes the dimension whatever the pooling path.
        self.dim = int(self._embed_batch([Image.new("RGB", (32, 32))]).shape[1])

    def _features(self, pixel_values: Any) -> Any:
        import torch

        model = self.model
        if self.pooling == "auto" and hasattr(model, "get_image_features"):
            output = model.get_image_features(pixel_values=pixel_values)
            return output if isinstance(output, torch.Tensor) else output.pooler_output
        output = model(pixel_values=pixel_values)
        pooled = getattr(output, "pooler_output", None)
        if self.pooling in ("auto", "pooler") and pooled is not None:
            return pooled.flatten(1)
        if self.pooling == "pooler":
            raise ConfigError(f"embedder '{self.name}': the model has no pooled output (use pooling='mean')")
        hidden = output.last_hidden_state
        if hidden.ndim == 4:  # convolutional (B, C, H, W)
            return hidden.mean(dim=(2, 3)) if self.pooling != "cls" else hidden[:, :, 0, 0]
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)

    def _embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=images, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        with torch.no_grad():
            features = self._features(pixel_values.to(next(self.model.parameters()).dtype))
        return features.float().cpu().numpy()

    def identity(self) -> dict[str, Any]:
        return {
            "name": "hf",
            "model": self.model_id,
            "revision": self.revision,
            "fingerprint": self._fingerprint,
            "pooling": self.pooling,
            "dim": self.dim,
        }


# ---------------------------------------------------------------------------
# optional libraries


def _import_optional(module: str, spec: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"embedder '{spec}' needs the '{package}' package (pip install {package})") from None


def _torch_embed(model: Any, transform: Callable, images: list[Image.Image], device: str, fn: Callable | None = None) -> np.ndarray:
    import torch

    batch = torch.stack([transform(img) for img in images]).to(device)
    with torch.no_grad():
        features = (fn or model)(batch)
    return features.float().flatten(1).cpu().numpy()


@EMBEDDERS.register("timm")
class TimmEmbedder(Embedder):
    """A timm backbone with its classifier removed (``num_classes=0`` gives pooled features)."""

    def __init__(self, model_name: str, pretrained: bool = True, device: str | None = None, batch_size: int = 32) -> None:
        timm = _import_optional("timm", f"timm:{model_name}", "timm")
        self.model_name = model_name
        self.pretrained = pretrained
        self.name = f"timm:{model_name}"
        self.batch_size = int(batch_size)
        self.device = _resolve_device(device)
        try:
            self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0).eval().to(self.device)
        except Exception as exc:  # timm raises RuntimeError/ValueError/HF errors for unknown names
            raise BackendError(f"embedder '{self.name}': cannot create model ({_first_line(exc)})") from None
        config = timm.data.resolve_model_data_config(self.model)
        self.transform = timm.data.create_transform(**config, is_training=False)
        self.dim = int(self.model.num_features)

    def _embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        return _torch_embed(self.model, self.transform, images, self.device)

    def identity(self) -> dict[str, Any]:
        return {"name": "timm", "model": self.model_name, "pretrained": self.pretrained, "dim": self.dim}


@EMBEDDERS.register("open_clip")
class OpenClipEmbedder(Embedder):
    """An OpenCLIP image tower; ``open_clip:ViT-B-32@laion2b_s34b_b79k`` names model@pretrained."""

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | None = None, batch_size: int = 32) -> None:
        open_clip = _import_optional("open_clip", f"open_clip:{model_name}", "open_clip_torch")
        if pretrained is None and "@" in model_name:
            model_name, pretrained = model_name.split("@", 1)
        self.model_name = model_name
        self.pretrained = pretrained
        self.name = f"open_clip:{model_name}" + (f"@{pretrained}" if pretrained else "")
        self.batch_size = int(batch_size)
        self.device = _resolve_device(device)
        try:
            model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        except Exception as exc:  # unknown names and download failures surface as varied types
            raise BackendError(f"embedder '{self.name}': cannot create model ({_first_line(exc)})") from None
        self.model = model.eval().to(self.device)
        self.transform = transform
        self.dim = int(self._embed_batch([Image.new("RGB", (32, 32))]).shape[1])

    def _embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        return _torch_embed(self.model, self.transform, images, self.device, fn=self.model.encode_image)

    def identity(self) -> dict[str, Any]:
        return {"name": "open_clip", "model": self.model_name, "pretrained": self.pretrained, "dim": self.dim}


# ---------------------------------------------------------------------------
# factory

#: registry entries whose spec needs an argument after the colon
_NEEDS_ARGUMENT = {"hf": "a hub id or local path", "timm": "a model name", "open_clip": "a model name"}


def create_embedder(spec: "str | Embedder", **kwargs: Any) -> Embedder:
    """Build an embedder from a spec such as ``pixel`` or ``hf:facebook/dinov2-small``.

    An ``Embedder`` instance is returned unchanged, so callers may accept either.
    """
    if isinstance(spec, Embedder):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"embedder spec must be a non-empty string like 'pixel' or 'hf:<model>' (got {spec!r})")
    kind, _, argument = spec.strip().partition(":")
    factory = EMBEDDERS.get(kind)
    if kind in _NEEDS_ARGUMENT:
        if not argument:
            raise ConfigError(f"embedder '{spec}' needs {_NEEDS_ARGUMENT[kind]} after '{kind}:'")
        return factory(argument, **kwargs)
    if argument:
        raise ConfigError(f"embedder '{kind}' takes no argument after ':' (got '{spec}')")
    return factory(**kwargs)


def list_embedders() -> list[str]:
    return EMBEDDERS.list_names()
