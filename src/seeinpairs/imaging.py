"""Open any medical image as a PIL image: PNG/JPEG/TIFF/BMP, NumPy arrays and DICOM.

VLM processors consume 8-bit RGB, so every loader ends there; the intermediate
float array keeps full dynamic range so that CT windowing (Hounsfield units)
and 16-bit radiographs are mapped deliberately rather than truncated.
"""

from __future__ import annotations

import hashlib
import struct
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


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def to_uint8(array: np.ndarray, window: Window | None = None, source: str = "array") -> np.ndarray:
    """Map a float array to 0..255 with a window, or its own finite min..max without one."""
    data = np.asarray(array, dtype=np.float64)
    if window is not None:
        low, high = window.center - window.width / 2, window.center + window.width / 2
    else:
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            raise ImageError(f"{source}: image holds no finite pixel values")
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    # NaN and -inf go to the bottom of the range, +inf to the top (no overflow warnings).
    data = np.nan_to_num(data, nan=low, posinf=high, neginf=low)
    scaled = (data - low) / (high - low)
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
    if data.dtype.kind not in "biuf":
        raise ImageError(f"{source}: array of dtype {data.dtype} is not an image (expected numbers or booleans)")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ImageError(f"{source}: array of shape {data.shape} holds no pixels")
    if data.shape[0] * data.shape[1] > MAX_PIXELS:
        raise ImageError(f"{source}: {data.shape[0]}x{data.shape[1]} pixels exceeds the limit of {MAX_PIXELS}")
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]  # drop alpha before scaling so it cannot stretch the colour range
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255
    elif data.dtype != np.uint8 or window is not None:
        data = to_uint8(data, window, source=source)
    return Image.fromarray(np.ascontiguousarray(data)).convert("RGB")


def _load_dicom(path: Path, window: Window | None) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageError(f"{path}: not a DICOM file") from None
    except Exception as exc:  # truncated or malformed element data
        raise ImageError(f"{path}: cannot read DICOM file ({_first_line(exc)})") from None
    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    except (TypeError, ValueError):
        rows = columns = 0
    if rows * columns > MAX_PIXELS:  # refuse before decoding, not after
        raise ImageError(f"{path}: {rows}x{columns} pixels exceeds the limit of {MAX_PIXELS}")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # pixel decoding fails in many ways (compression, truncation)
        raise ImageError(f"{path}: cannot decode DICOM pixels ({_first_line(exc)})") from None
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and pixels.ndim == 3:
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame volume: take the middle frame
    elif samples > 1 and pixels.ndim == 4:
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame colour series: the middle frame
    if samples == 1:
        try:
            values = apply_modality_lut(pixels, dataset).astype(np.float64)
        except Exception as exc:  # a malformed Modality LUT or rescale attributes
            raise ImageError(f"{path}: cannot apply the DICOM modality LUT ({_first_line(exc)})") from None
        if window is None:
            window = _dicom_window(dataset)
        image = array_to_image(values, window, source=str(path))
        if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
            image = Image.fromarray(255 - np.asarray(image)).convert("RGB")
        return image
    return array_to_image(pixels, window, source=str(path))


def _dicom_window(dataset) -> Window | None:
    """The first (centre, width) pair stored in a DICOM header, if it is usable."""
    from pydicom.multival import MultiValue

    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center = float(center[0] if isinstance(center, (MultiValue, list, tuple)) else center)
        width = float(width[0] if isinstance(width, (MultiValue, list, tuple)) else width)
    except (TypeError, ValueError, IndexError):
        return None  # an empty or malformed window falls back to the data's own range
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return Window(center, width)


def load_image(path: str | Path, window: Window | str | None = None) -> Image.Image:
    """Load an image file as 8-bit RGB; DICOM uses its own window unless one is given."""
    path = Path(path)
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in NAMED_WINDOWS:
            raise ImageError(f"{path}: unknown window '{window}' (known: {', '.join(NAMED_WINDOWS)})")
        window = NAMED_WINDOWS[key]
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in NUMPY_SUFFIXES:
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, EOFError, OSError) as exc:
                raise ImageError(f"{path}: not a plain NumPy array ({_first_line(exc)})") from None
            if not isinstance(array, np.ndarray):
                raise ImageError(f"{path}: not a plain NumPy array")
            return array_to_image(array, window, source=str(path))
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return array_to_image(tifffile.imread(path), window, source=str(path))
        if suffix in DICOM_SUFFIXES - {""} or _has_dicom_preamble(path):
            return _load_dicom(path, window)
        try:
            handle = Image.open(path)
        except UnidentifiedImageError:
            if suffix == "":
                # no suffix and no preamble: perhaps a DICOM file without its preamble
                return _load_dicom(path, window)
            raise
        with handle:
            if handle.width * handle.height > MAX_PIXELS:
                raise ImageError(f"{path}: {handle.width}x{handle.height} pixels exceeds the limit of {MAX_PIXELS}")
            handle.load()
            if handle.mode.startswith("I") or handle.mode == "F":
                return array_to_image(np.asarray(handle), window, source=str(path))
            if window is not None:
                # window the displayed intensities, never palette indices or alpha
                grey = handle.mode in ("1", "L", "LA", "La", "P") and _is_grey(handle)
                converted = handle.convert("L" if grey else "RGB")
                return array_to_image(np.asarray(converted), window, source=str(path))
            return handle.convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
            Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: corrupt or unsupported image ({_first_line(exc)})") from None


def _is_grey(handle: Image.Image) -> bool:
    if handle.mode != "P":
        return True
    rgb = np.asarray(handle.convert("RGB"))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


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
    resolved = Path(path).expanduser().absolute()  # a relative path means another file after chdir
    try:
        stat = resolved.stat()
        if not resolved.is_file():
            raise ImageError(f"{path}: image file not found")
        return cached_file_hash(str(resolved), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image file ({_first_line(exc)})") from None
