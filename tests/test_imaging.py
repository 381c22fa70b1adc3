"""Tests for seeinpairs.imaging: every supported format ends as 8-bit RGB, errors are one-line ImageErrors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

from seeinpairs import imaging
from seeinpairs.errors import ImageError, SeeInPairsError
from seeinpairs.imaging import (
    NAMED_WINDOWS,
    Window,
    array_to_image,
    file_hash,
    image_hash,
    load_image,
    to_uint8,
)

CT_PATH = get_testdata_file("CT_small.dcm")
MR_PATH = get_testdata_file("MR_small.dcm")


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8
    assert array.shape == (size[1], size[0], 3)
    return array


def assert_one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert str(path) in message
    assert isinstance(excinfo.value, SeeInPairsError)
    return message


def hounsfield(path) -> np.ndarray:
    dataset = pydicom.dcmread(path)
    slope = float(dataset.get("RescaleSlope", 1))
    intercept = float(dataset.get("RescaleIntercept", 0))
    return dataset.pixel_array.astype(np.float64) * slope + intercept


def manual_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    low, high = center - width / 2, center + width / 2
    return (np.clip((values - low) / (high - low), 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- PIL formats


def test_png_greyscale(tmp_path):
    data = np.arange(12 * 10, dtype=np.uint8).reshape(10, 12)
    path = tmp_path / "grey.png"
    Image.fromarray(data, mode="L").save(path)
    array = assert_rgb(load_image(path), (12, 10))
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], data)


def test_png_rgb_is_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(data, mode="RGB").save(path)
    np.testing.assert_array_equal(assert_rgb(load_image(path), (7, 9)), data)


def test_png_rgba_drops_alpha(tmp_path):
    data = np.zeros((5, 6, 4), dtype=np.uint8)
    data[..., 0] = 200
    data[..., 1] = 100
    data[..., 2] = 50
    data[..., 3] = 255
    path = tmp_path / "rgba.png"
    Image.fromarray(data, mode="RGBA").save(path)
    array = assert_rgb(load_image(path), (6, 5))
    np.testing.assert_array_equal(array, data[..., :3])


def test_png_16_bit_uses_full_range(tmp_path):
    data = np.zeros((8, 8), dtype=np.uint16)
    data[:, 4:] = 40000
    data[0, 0] = 1000
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    with Image.open(path) as handle:
        assert handle.mode.startswith("I")  # really a 16-bit file
    array = assert_rgb(load_image(path), (8, 8))
    # min..max stretched: 0 -> 0, 40000 -> 255, not clipped to 255 everywhere
    assert array[1, 0, 0] == 0
    assert array[0, 5, 0] == 255
    assert array[0, 0, 0] == round(1000 / 40000 * 255)


def test_png_16_bit_with_window(tmp_path):
    data = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    array = np.asarray(load_image(path, window=Window(150, 100)))  # 100..200
    np.testing.assert_array_equal(array[0, :, 0], [0, 0, 255, 255])


def test_png_8_bit_with_window(tmp_path):
    data = np.array([[0, 50, 100, 150, 200]], dtype=np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(data, mode="L").save(path)
    array = np.asarray(load_image(path, window=Window(100, 100)))  # 50..150
    np.testing.assert_array_equal(array[0, :, 0], [0, 0, 128, 255, 255])


def test_palette_png_with_window_uses_intensities_not_indices(tmp_path):
    grey = Image.fromarray(np.array([[10, 250], [250, 10]], dtype=np.uint8), mode="L")
    palette = grey.convert("P", palette=Image.Palette.ADAPTIVE)
    path = tmp_path / "palette.png"
    palette.save(path)
    array = np.asarray(load_image(path, window=Window(130, 240)))  # 10..250
    assert array[0, 0, 0] == 0 and array[0, 1, 0] == 255


def test_jpeg(tmp_path):
    data = np.full((16, 20, 3), (200, 30, 90), dtype=np.uint8)
    path = tmp_path / "photo.JPG"  # suffixes are matched case-insensitively
    Image.fromarray(data).save(path, format="JPEG", quality=95)
    array = assert_rgb(load_image(path), (20, 16))
    assert np.abs(array.astype(int) - data.astype(int)).max() <= 6


def test_bmp_and_gif(tmp_path):
    data = np.full((4, 4, 3), 77, dtype=np.uint8)
    for name in ("a.bmp", "a.gif"):
        Image.fromarray(data).save(tmp_path / name)
        assert_rgb(load_image(tmp_path / name), (4, 4))


# --------------------------------------------------------------------------- TIFF


def test_tiff_uint16(tmp_path):
    data = np.linspace(0, 65535, 30 * 20).reshape(20, 30).astype(np.uint16)
    path = tmp_path / "scan.tiff"
    tifffile.imwrite(path, data)
    array = assert_rgb(load_image(path), (30, 20))
    np.testing.assert_array_equal(array[..., 0], to_uint8(data))
    assert array.min() == 0 and array.max() == 255


def test_tiff_rgb_uint8(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    path = tmp_path / "colour.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    np.testing.assert_array_equal(assert_rgb(load_image(path), (5, 6)), data)


def test_corrupt_tiff_is_an_image_error(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"this is not a tiff")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


# --------------------------------------------------------------------------- NumPy


def test_npy_2d_float(tmp_path):
    data = np.array([[-1.0, 0.0], [1.0, 3.0]])
    path = tmp_path / "a.npy"
    np.save(path, data)
    array = assert_rgb(load_image(path), (2, 2))
    np.testing.assert_array_equal(array[..., 1], [[0, 64], [128, 255]])


def test_npy_hwc_rgb(tmp_path):
    data = np.zeros((3, 4, 3), dtype=np.uint8)
    data[..., 0] = 255
    path = tmp_path / "rgb.npy"
    np.save(path, data)
    np.testing.assert_array_equal(assert_rgb(load_image(path), (4, 3)), data)


def test_npy_channels_first(tmp_path):
    data = np.zeros((3, 10, 12), dtype=np.uint8)
    data[1] = 200  # green plane
    path = tmp_path / "chw.npy"
    np.save(path, data)
    array = assert_rgb(load_image(path), (12, 10))
    assert (array[..., 1] == 200).all() and (array[..., 0] == 0).all() and (array[..., 2] == 0).all()


def test_npy_single_channel_last_and_first(tmp_path):
    for shape in ((5, 7, 1), (1, 5, 7)):
        data = np.arange(35, dtype=np.float32).reshape(shape)
        path = tmp_path / f"{shape}.npy"
        np.save(path, data)
        assert_rgb(load_image(path), (7, 5))


def test_npy_bool(tmp_path):
    data = np.array([[True, False], [False, True]])
    path = tmp_path / "mask.npy"
    np.save(path, data)
    array = assert_rgb(load_image(path), (2, 2))
    np.testing.assert_array_equal(array[..., 0], [[255, 0], [0, 255]])


def test_npy_constant_and_nan(tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.full((3, 3), 7.0))
    assert (np.asarray(load_image(path)) == 0).all()
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[np.nan, 0.0], [1.0, np.inf]]))
    array = np.asarray(load_image(path))[..., 0]
    np.testing.assert_array_equal(array, [[0, 0], [255, 255]])


def test_rgba_float_array_alpha_does_not_stretch_colours():
    data = np.zeros((2, 2, 4))
    data[..., 0] = [[0.0, 0.5], [1.0, 1.0]]
    data[..., 3] = 100.0  # alpha far outside the colour range
    array = np.asarray(array_to_image(data))
    np.testing.assert_array_equal(array[..., 0], [[0, 128], [255, 255]])


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((2, 3, 4, 5)), "shape"),
        (np.zeros(10), "shape"),
        (np.zeros((5, 5, 2)), "shape"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.zeros((0, 4)), "no pixels"),
        (np.full((2, 2), np.nan), "no finite"),
    ],
)
def test_npy_non_images(tmp_path, array, fragment):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert fragment in assert_one_line_error(excinfo, path)


def test_npy_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "NumPy" in assert_one_line_error(excinfo, path)


def test_npy_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((50, 50)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_npy_garbage(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"hello, world")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


# --------------------------------------------------------------------------- to_uint8 / array_to_image


def test_to_uint8_window_edges():
    window = Window(0, 100)  # -50..50
    values = np.array([-1000, -50, 0, 50, 1000], dtype=np.float64)
    np.testing.assert_array_equal(to_uint8(values, window), [0, 0, 128, 255, 255])


def test_to_uint8_zero_width_window():
    assert (to_uint8(np.arange(4.0), Window(1, 0)) == 0).all()


def test_to_uint8_all_nan_names_source():
    with pytest.raises(ImageError, match="thing.npy"):
        to_uint8(np.full(3, np.nan), source="thing.npy")


def test_array_to_image_does_not_modify_input():
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    before = data.copy()
    array_to_image(data, Window(5, 4))
    np.testing.assert_array_equal(data, before)


# --------------------------------------------------------------------------- DICOM


def test_dicom_ct_default_uses_data_range():
    values = hounsfield(CT_PATH)
    array = assert_rgb(load_image(CT_PATH), (values.shape[1], values.shape[0]))
    # CT_small has no stored window: min..max of the Hounsfield values
    low, high = values.min(), values.max()
    expected = manual_window(values, (low + high) / 2, high - low)
    np.testing.assert_array_equal(array[..., 0], expected)
    assert array[..., 0].min() == 0 and array[..., 0].max() == 255


@pytest.mark.parametrize("name", ["lung", "soft_tissue", "bone", "brain"])
def test_dicom_ct_named_windows(name):
    window = NAMED_WINDOWS[name]
    values = hounsfield(CT_PATH)
    array = np.asarray(load_image(CT_PATH, window=name))[..., 0]
    np.testing.assert_array_equal(array, manual_window(values, window.center, window.width))
    low, high = window.center - window.width / 2, window.center + window.width / 2
    assert (array[values <= low] == 0).all()
    assert (array[values >= high] == 255).all()
    inside = (values > low) & (values < high)
    if inside.any():
        assert ((array[inside] >= 0) & (array[inside] <= 255)).all()


def test_dicom_ct_windows_differ_and_use_hounsfield_units():
    values = hounsfield(CT_PATH)
    lung = np.asarray(load_image(CT_PATH, window="lung"))[..., 0]
    soft = np.asarray(load_image(CT_PATH, window="soft_tissue"))[..., 0]
    assert not np.array_equal(lung, soft)
    # soft tissue: -160..240 HU, so air/fat below (e.g. -500 HU) is black and bone (>240) white
    assert (soft[values < -160] == 0).all()
    assert (soft[values > 240] == 255).all()
    # the rescale intercept matters: raw stored values (all >= 0) would never be black in the soft-tissue window
    raw = pydicom.dcmread(CT_PATH).pixel_array
    assert (manual_window(raw.astype(float), 40, 400) > 0).all()
    assert (soft == 0).any() and (soft == 255).any()


def test_dicom_ct_custom_window_object():
    values = hounsfield(CT_PATH)
    array = np.asarray(load_image(CT_PATH, window=Window(100.0, 200.0)))[..., 0]  # 0..200 HU
    np.testing.assert_array_equal(array, manual_window(values, 100.0, 200.0))
    assert (array[values < 0] == 0).all()
    assert (array[values > 200] == 255).all()


def test_named_window_spelling_and_unknown():
    a = np.asarray(load_image(CT_PATH, window="soft_tissue"))
    b = np.asarray(load_image(CT_PATH, window="Soft-Tissue"))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ImageError) as excinfo:
        load_image(CT_PATH, window="liver-ish")
    message = assert_one_line_error(excinfo, CT_PATH)
    assert "liver-ish" in message and "lung" in message


def test_dicom_mr_uses_stored_window():
    dataset = pydicom.dcmread(MR_PATH)
    values = hounsfield(MR_PATH)
    center, width = float(dataset.WindowCenter), float(dataset.WindowWidth)
    array = assert_rgb(load_image(MR_PATH), (dataset.Columns, dataset.Rows))
    np.testing.assert_array_equal(array[..., 0], manual_window(values, center, width))
    # an explicit window wins over the stored one
    other = np.asarray(load_image(MR_PATH, window=Window(1000, 400)))[..., 0]
    np.testing.assert_array_equal(other, manual_window(values, 1000, 400))


def test_dicom_multivalued_window(tmp_path):
    dataset = pydicom.dcmread(CT_PATH)
    dataset.WindowCenter = [40, -600]
    dataset.WindowWidth = [400, 1500]
    path = tmp_path / "multi.dcm"
    dataset.save_as(path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(load_image(CT_PATH, window="soft_tissue")))


def test_dicom_monochrome1_is_inverted(tmp_path):
    dataset = pydicom.dcmread(MR_PATH)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "inverted.dcm"
    dataset.save_as(path)
    normal = np.asarray(load_image(MR_PATH))
    inverted = assert_rgb(load_image(path), (dataset.Columns, dataset.Rows))
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))
    # also with an explicit window
    normal = np.asarray(load_image(MR_PATH, window=Window(800, 600)))
    inverted = np.asarray(load_image(path, window=Window(800, 600)))
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_dicom_without_suffix_detected_by_preamble(tmp_path):
    for name in ("scan", "scan.dat", "scan.png"):
        path = tmp_path / name
        shutil.copyfile(CT_PATH, path)
        np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(load_image(CT_PATH)))


def test_png_without_suffix(tmp_path):
    path = tmp_path / "picture"
    Image.fromarray(np.full((3, 3), 9, dtype=np.uint8)).save(path, format="PNG")
    assert_rgb(load_image(path), (3, 3))


def test_dicom_suffix_uppercase(tmp_path):
    path = tmp_path / "SCAN.DCM"
    shutil.copyfile(MR_PATH, path)
    assert_rgb(load_image(path), (64, 64))


def test_dicom_without_pixel_data(tmp_path):
    dataset = pydicom.dcmread(CT_PATH)
    del dataset.PixelData
    path = tmp_path / "nopixels.dcm"
    dataset.save_as(path)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_dicom_truncated(tmp_path):
    path = tmp_path / "cut.dcm"
    path.write_bytes(Path(CT_PATH).read_bytes()[:2000])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_dicom_oversized_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(ImageError) as excinfo:
        load_image(CT_PATH)
    assert "exceeds" in assert_one_line_error(excinfo, CT_PATH)


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.png"
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "not found" in assert_one_line_error(excinfo, path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path)
    assert_one_line_error(excinfo, tmp_path)


def test_corrupt_png(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "corrupt" in assert_one_line_error(excinfo, path)


def test_random_bytes_png(tmp_path):
    path = tmp_path / "random.png"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\nsecond line\n")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "DICOM" in assert_one_line_error(excinfo, path)


def test_empty_dcm(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_text_file_without_suffix(tmp_path):
    path = tmp_path / "README"
    path.write_text("hello\n")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


def test_oversized_png(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(path)
    monkeypatch.setattr(imaging, "MAX_PIXELS", 399)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "exceeds" in assert_one_line_error(excinfo, path)
    monkeypatch.setattr(imaging, "MAX_PIXELS", 400)
    assert_rgb(load_image(path), (20, 20))


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_oversized_arrays(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"big{suffix}"
    data = np.zeros((20, 20), dtype=np.uint16)
    if suffix == ".npy":
        np.save(path, data)
    else:
        tifffile.imwrite(path, data)
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert "exceeds" in assert_one_line_error(excinfo, path)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just text")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, path)


# --------------------------------------------------------------------------- hashing


def test_image_hash_equal_bytes_equal_hash(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(a)
    shutil.copyfile(a, b)
    Image.fromarray(np.ones((4, 4), dtype=np.uint8)).save(c)
    assert image_hash(a) == image_hash(b) == file_hash(a)
    assert image_hash(a) != image_hash(c)
    assert len(image_hash(a)) == 64
    assert image_hash(str(a)) == image_hash(a)


def test_image_hash_sees_rewrites(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"one")
    first = image_hash(path)
    path.write_bytes(b"three")
    assert image_hash(path) != first


def test_image_hash_relative_path_follows_cwd(tmp_path, monkeypatch):
    for name, content in (("x", b"first"), ("y", b"other")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "img.bin").write_bytes(content)
    monkeypatch.chdir(tmp_path / "x")
    first = image_hash("img.bin")
    monkeypatch.chdir(tmp_path / "y")
    assert image_hash("img.bin") != first


def test_image_hash_missing_file(tmp_path):
    path = tmp_path / "gone.png"
    with pytest.raises(ImageError) as excinfo:
        image_hash(path)
    assert_one_line_error(excinfo, path)
