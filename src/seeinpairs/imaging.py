"""Open any medical image as a PIL image: PNG/JPEG/TIFF/BMP, NumPy arrays and DICOM.

VLM processors consume 8-bit RGB, so every loader ends there; the intermediate
float array keeps full dynamic range so that CT windowing (Hounsfield units)
and 16-bit radiographs are mapped deliberately rather than truncated.

Memory budget. Every format's size is read from its header first (PNG/JPEG/TIFF
dimensions, DICOM Rows/Columns, the NPY header's shape) and an image declaring
more than :data:`MAX_PIXELS` pixels is refused before a byte of pixel data is
decoded, so a small file that declares a huge image (a decompression bomb)
costs nothing. JPEG is the exception that is *reduced* instead of refused: its
DCT decoder can decode at 1/2, 1/4 or 1/8 scale (PIL's ``draft``), so an
oversized JPEG is decoded at the largest of those scales that fits the limit.
A multi-frame DICOM decodes only the frame it uses.
"""

from __future__ import annotations

import hashlib
import io
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
#: Refuse images with more pixels than this, judged from the header before decoding.
#: 36 M pixels (6000 x 6000) holds the largest common radiographs and mammograms
#: (about 4700 x 5900) with room to spare, while bounding the loader's peak memory:
#: about 8 bytes per pixel for 8-bit images (decoded pixels plus the RGB copy),
#: i.e. under 300 MB, and about 11 bytes per pixel on the windowed 16-bit/DICOM path.
#: The earlier 64 M let a 60 KB PNG declaring 7900 x 7900 cost over 1 GB in the server.
MAX_PIXELS = 36_000_000
#: the codec plugins pydicom needs for compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE)
DICOM_CODEC_PACKAGES = ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle")


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


def _all_lines(exc: BaseException) -> str:
    """Every line of an exception's message joined into one (pydicom lists the per-plugin reasons
    and the missing packages on separate lines, and the first line alone names none of them)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def _check_pixels(source: object, rows: int, columns: int) -> None:
    """Refuse a declared size over the limit; called on header values, before decoding."""
    if rows * columns > MAX_PIXELS:
        raise ImageError(f"{source}: {rows}x{columns} pixels exceeds the limit of {MAX_PIXELS} "
                         "(refused before decoding)")


def to_uint8(array: np.ndarray, window: Window | None = None, source: str = "array") -> np.ndarray:
    """Map a float array to 0..255 with a window, or its own finite min..max without one."""
    # one float working copy, then in-place arithmetic: the peak stays near 9 bytes per pixel
    data = np.array(array, dtype=np.float64, copy=True)
    if window is not None:
        low, high = window.center - window.width / 2, window.center + window.width / 2
    else:
        finite = np.isfinite(data)
        if not finite.any():
            raise ImageError(f"{source}: image holds no finite pixel values")
        low = float(np.min(data, where=finite, initial=np.inf))
        high = float(np.max(data, where=finite, initial=-np.inf))
        del finite
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    # NaN and -inf go to the bottom of the range, +inf to the top (no overflow warnings).
    np.nan_to_num(data, copy=False, nan=low, posinf=high, neginf=low)
    data -= low
    data /= high - low
    np.clip(data, 0.0, 1.0, out=data)
    data *= 255.0
    data += 0.5
    return data.astype(np.uint8)


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
    _check_pixels(source, data.shape[0], data.shape[1])
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]  # drop alpha before scaling so it cannot stretch the colour range
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255
    elif data.dtype != np.uint8 or window is not None:
        data = to_uint8(data, window, source=source)
    return Image.fromarray(np.ascontiguousarray(data)).convert("RGB")


def _read_dicom(path: Path):
    """Read a DICOM data set; one without its 128-byte preamble (or its 'DICM' prefix) is read
    with ``force=True``, and a forced read that finds no pixel data means "not DICOM"."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass  # no preamble: try the forced read below
    except Exception as exc:  # truncated or malformed element data
        raise ImageError(f"{path}: cannot read DICOM file ({_first_line(exc)})") from None
    try:
        with open(path, "rb") as handle:
            starts_with_prefix = handle.read(4) == b"DICM"
        # 'DICM' at offset 0: the preamble alone was stripped; put it back so the meta group is parsed
        source = io.BytesIO(bytes(128) + path.read_bytes()) if starts_with_prefix else path
        dataset = pydicom.dcmread(source, force=True)
        if "PixelData" not in dataset:
            raise ValueError("no pixel data")
        if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
            # no file meta: pydicom has already guessed the encoding from the first element
            from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

            dataset.ensure_file_meta()
            implicit, little = dataset.original_encoding
            if little is False:
                raise ValueError("big-endian data without file meta")
            dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        return dataset
    except Exception:
        raise ImageError(f"{path}: not a DICOM file (no DICOM header and no image data found)") from None


def _dicom_pixels(path: Path, dataset) -> np.ndarray:
    """Decode the one frame used (the middle one of a multi-frame series), after the size check."""
    from pydicom.pixels import pixel_array

    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        rows = columns = 0
        frames = 1
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(f"{path}: DICOM file holds no image (no Pixel Data element)")
    _check_pixels(path, rows, columns)  # refuse before decoding, not after
    try:
        return pixel_array(dataset, index=frames // 2 if frames > 1 else None)
    except Exception as exc:  # pixel decoding fails in many ways (compression, truncation)
        reason = _all_lines(exc)
        if "missing dependencies" in reason or ("plugin" in reason and "requires" in reason):
            reason += f" (install the DICOM codecs: pip install {' '.join(DICOM_CODEC_PACKAGES)})"
        raise ImageError(f"{path}: cannot decode DICOM pixels ({reason})") from None


def _load_dicom(path: Path, window: Window | None) -> Image.Image:
    from pydicom.pixels import apply_modality_lut

    dataset = _read_dicom(path)
    pixels = _dicom_pixels(path, dataset)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
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
    """Load an image file as 8-bit RGB; DICOM uses its own window unless one is given.

    The declared size is checked against :data:`MAX_PIXELS` before decoding (see the
    module docstring); every failure is an :class:`ImageError` naming the file.
    """
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
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: the image file is empty")
        if suffix in NUMPY_SUFFIXES:
            return array_to_image(_load_npy(path), window, source=str(path))
        if suffix in TIFF_SUFFIXES:
            return array_to_image(_load_tiff(path), window, source=str(path))
        if suffix in DICOM_SUFFIXES - {""} or _has_dicom_preamble(path):
            return _load_dicom(path, window)
        try:
            handle = Image.open(path)
        except Image.DecompressionBombError as exc:  # PIL's own header check, far above ours
            raise ImageError(f"{path}: image exceeds the limit of {MAX_PIXELS} pixels, refused before decoding "
                             f"({_first_line(exc)})") from None
        except UnidentifiedImageError:
            if suffix == "":
                # no suffix and no preamble: perhaps a DICOM file without its preamble
                return _load_dicom(path, window)
            raise
        with handle:
            return _decode_pil(path, handle, window)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
            Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: corrupt or unsupported image ({_first_line(exc)})") from None


def _decode_pil(path: Path, handle: Image.Image, window: Window | None) -> Image.Image:
    """Decode an opened PIL image within the pixel limit: JPEG at a reduced DCT scale, others refused."""
    if handle.width * handle.height > MAX_PIXELS and handle.format == "JPEG":
        scale = 2
        while scale < 8 and (handle.width // scale) * (handle.height // scale) > MAX_PIXELS:
            scale *= 2
        handle.draft(handle.mode, (handle.width // scale, handle.height // scale))
    _check_pixels(path, handle.height, handle.width)
    handle.load()
    if handle.mode.startswith("I") or handle.mode == "F":
        return array_to_image(np.asarray(handle), window, source=str(path))
    if window is not None:
        # window the displayed intensities, never palette indices or alpha
        grey = handle.mode in ("1", "L", "LA", "La", "P") and _is_grey(handle)
        converted = handle.convert("L" if grey else "RGB")
        return array_to_image(np.asarray(converted), window, source=str(path))
    return handle.convert("RGB")


def _load_npy(path: Path) -> np.ndarray:
    """A plain NumPy array; the header (shape, dtype) is checked before the data is read."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a plain NumPy array ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise ImageError(f"{path}: not a plain NumPy array (it holds Python objects, which are never unpickled)")
    if len(shape) >= 2:
        # (H, W), (H, W, C) or channels-first (C, H, W): the two largest axes bound the pixels
        largest = sorted(shape)[-2:]
        _check_pixels(path, largest[0], largest[1])
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ImageError(f"{path}: not a plain NumPy array ({_first_line(exc)})") from None
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{path}: not a plain NumPy array")
    return array


def _load_tiff(path: Path) -> np.ndarray:
    """The first TIFF page series, after checking its declared shape."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        shape = tiff.series[0].shape if tiff.series else ()
        if len(shape) >= 2:
            largest = sorted(shape)[-2:]
            _check_pixels(path, largest[0], largest[1])
        return tiff.asarray()


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
