"""Open any medical image as a PIL image: PNG/JPEG/TIFF/BMP, NumPy arrays and DICOM.

VLM processors consume 8-bit RGB, so every loader ends there; the intermediate
float array keeps full dynamic range so that CT windowing (Hounsfield units)
and 16-bit radiographs are mapped deliberately rather than truncated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
NUMPY_SUFFIXES = {".npy"}
DICOM_SUFFIXES = {".dcm", ".dicom", ""}
#: refuse images larger than this many pixels (decompression bombs)
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Window:
    """A display window (centre/width), e.g. CT lung (-600, 1500) or soft tissue (40, 400)."""

    center: float
    width: float


NAMED_WINDOWS = {
    "soft_tissue": Window(40, 400),
    "lung": Window(-600, 1500),
    "bone": Window(400, 1800),
    "brain": Window(40, 80),
}


def to_uint8(array: np.ndarray, window: Window | None = None) -> np.ndarray:
    """Map a float array to 0..255 with a window, or its own finite min..max without one."""
    data = np.asarray(array, dtype=np.float64)
    if window is not None:
        low, high = window.center - window.width / 2, window.center + window.width / 2
    else:
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            raise ImageError("image holds no finite pixel values")
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(data, nan=low) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def array_to_image(array: np.ndarray, window: Window | None = None, source: str = "array") -> Image.Image:
    """Turn a 2-D (H, W) or 3-D (H, W, C) array into an RGB PIL image."""
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[0] in (1, 3, 4) and data.shape[-1] not in (1, 3, 4):
        data = np.moveaxis(data, 0, -1)  # channels-first arrays
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise ImageError(f"{source}: array of shape {data.shape} is not an image (expected HxW or HxWxC)")
    if data.shape[0] * data.shape[1] > MAX_PIXELS:
        raise ImageError(f"{source}: {data.shape[0]}x{data.shape[1]} pixels exceeds the limit of {MAX_PIXELS}")
    if data.dtype != np.uint8 or window is not None:
        if data.dtype == bool:
            data = data.astype(np.uint8) * 255
        else:
            data = to_uint8(data, window)
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]
    return Image.fromarray(data).convert("RGB")


def _load_dicom(path: Path, window: Window | None) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except InvalidDicomError:
        raise ImageError(f"{path}: not a DICOM file") from None
    except Exception as exc:  # pixel decoding fails in many ways (compression, truncation)
        raise ImageError(f"{path}: cannot decode DICOM pixels ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame volume: take the middle frame
    if dataset.get("SamplesPerPixel", 1) == 1:
        values = apply_modality_lut(pixels, dataset).astype(np.float64)
        if window is None:
            center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
            if center is not None and width is not None:
                center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
                width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
                if width > 0:
                    window = Window(center, width)
        image = array_to_image(values, window, source=str(path))
        if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
            image = Image.fromarray(255 - np.asarray(image))
        return image
    return array_to_image(pixels, window, source=str(path))


def load_image(path: str | Path, window: Window | str | None = None) -> Image.Image:
    """Load an image file as 8-bit RGB; DICOM uses its own window unless one is given."""
    path = Path(path)
    if isinstance(window, str):
        try:
            window = NAMED_WINDOWS[window]
        except KeyError:
            raise ImageError(f"unknown window '{window}' (known: {', '.join(NAMED_WINDOWS)})") from None
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in NUMPY_SUFFIXES:
            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise ImageError(f"{path}: not a plain NumPy array ({exc})") from None
            return array_to_image(array, window, source=str(path))
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return array_to_image(tifffile.imread(path), window, source=str(path))
        if suffix in DICOM_SUFFIXES or _has_dicom_preamble(path):
            return _load_dicom(path, window)
        with Image.open(path) as handle:
            if handle.width * handle.height > MAX_PIXELS:
                raise ImageError(f"{path}: {handle.width}x{handle.height} pixels exceeds the limit of {MAX_PIXELS}")
            handle.load()
            if handle.mode in ("I", "I;16", "I;16B", "F") or window is not None:
                return array_to_image(np.asarray(handle), window, source=str(path))
            return handle.convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: corrupt or unsupported image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def file_hash(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes: the identity of an image for caches and store keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=4096)
def cached_file_hash(path: str, mtime_ns: int, size: int) -> str:
    return file_hash(path)


def image_hash(path: str | Path) -> str:
    """File hash memoised on (path, mtime, size), so repeated references are hashed once."""
    stat = Path(path).stat()
    return cached_file_hash(str(path), stat.st_mtime_ns, stat.st_size)
