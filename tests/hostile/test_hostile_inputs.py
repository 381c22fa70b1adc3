"""Hostile input files: every bad image, DICOM or manifest row is a one-line error naming the file and
row, never a traceback or a hang, and ``seeinpairs validate`` finds all of them in one pass.

A new bad input is one line: a name and a function writing the file in ``BAD_IMAGES`` (a bad image)
or ``BAD_ROWS`` (a bad manifest row).
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from seeinpairs.cases import CaseTable
from seeinpairs.errors import ImageError, ManifestError
from seeinpairs.imaging import MAX_PIXELS, load_image

CT = Path(get_testdata_file("CT_small.dcm"))
HANG_GUARD_S = 120  # a generous bound: a validate call takes a few seconds


def png_bytes(size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR declares width x height (a decompression bomb header)."""
    data = bytearray(png_bytes((1, 1)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    """An NPY file whose header declares ``shape`` but which holds no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<u2", "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # the magic string and the header


def pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def dicom_claiming(rows: int, columns: int) -> bytes:
    dataset = pydicom.dcmread(CT)
    dataset.Rows, dataset.Columns = rows, columns
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


#: (file name, bytes writer, a fragment the one-line error must hold besides the file name)
BAD_IMAGES: list[tuple[str, Callable[[], bytes], str]] = [
    ("truncated.png", lambda: png_bytes((200, 200))[:300], "corrupt"),
    ("truncated.jpg", lambda: jpeg_bytes()[:400], "corrupt"),
    ("empty.png", lambda: b"", "empty"),
    ("text.png", lambda: b"this is plain text, not a picture\n" * 3, "corrupt or unsupported"),
    ("bomb.png", lambda: png_claiming(30000, 30000), "exceeds the limit"),
    ("budget.png", lambda: png_claiming(7900, 7900), "exceeds the limit"),
    ("corrupt.npy", lambda: b"\x93NUMPY\x01\x00garbage", "not a plain NumPy array"),
    ("pickled.npy", pickled_npy, "never unpickled"),
    ("bomb.npy", lambda: npy_header_only((60000, 60000)), "exceeds the limit"),
    ("text.dcm", lambda: b"not a dicom file at all\n" * 4, "not a DICOM file"),
    ("preamble_only.dcm", lambda: bytes(128) + b"DICM", "holds no image"),
    ("truncated_ct.dcm", lambda: CT.read_bytes()[: len(CT.read_bytes()) * 2 // 3], "cannot decode DICOM pixels"),
    ("bomb.dcm", lambda: dicom_claiming(60000, 60000), "exceeds the limit"),
]

#: (name, manifest row values for image/split, a fragment of its problem); files made by ``make_corpus``
BAD_ROWS: list[tuple[str, dict[str, str], str]] = [
    ("traversal", {"image": "../../../../etc/passwd"}, "lies outside the data folder"),
    ("absolute", {"image": "/etc/passwd"}, "lies outside the data folder"),
    ("symlink", {"image": "link.png"}, "lies outside the data folder"),
    ("unknown split", {"split": "holdout??"}, "'holdout??' is not a split"),
    ("missing file", {"image": "absent.png"}, "file not found"),
]


def make_corpus(folder: Path) -> tuple[Path, dict[int, str]]:
    """A manifest with one good row, then every bad image and bad row; returns it and row -> expected text."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "real.png").write_bytes(png_bytes())
    (folder / "link.png").symlink_to(outside / "real.png")
    (folder / "good.png").write_bytes(png_bytes())
    lines = ["case_id,image,label,split", "good,good.png,normal,train"]
    expected: dict[int, str] = {}
    for name, writer, fragment in BAD_IMAGES:
        (folder / name).write_bytes(writer())
        lines.append(f"{name},{name},normal,test")
        expected[len(lines) - 1] = name
    for name, values, fragment in BAD_ROWS:
        row = {"image": "good.png", "split": "test", **values}
        lines.append(f"{name},{row['image']},normal,{row['split']}")
        expected[len(lines) - 1] = fragment
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, expected


def run_validate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seeinpairs.cli", "validate", *map(str, args)],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- the loader, file by file


@pytest.mark.parametrize("name, writer, fragment", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_image_is_a_one_line_image_error(tmp_path, name, writer, fragment):
    path = tmp_path / name
    path.write_bytes(writer())
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


def test_budget_png_is_refused_by_the_header_check():
    # 7900 x 7900 was just under the old limit and cost over 1 GB; the limit now sits below it
    assert 7900 * 7900 > MAX_PIXELS >= 4700 * 5900


@pytest.mark.parametrize("name, values, fragment", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_row_names_row_and_field(tmp_path, name, values, fragment):
    manifest, _ = make_corpus(tmp_path / "data")
    row = {"image": "good.png", "split": "test", **values}
    manifest.write_text(f"case_id,image,label,split\nx,{row['image']},normal,{row['split']}\n")
    with pytest.raises(ManifestError) as excinfo:
        CaseTable.load(manifest)
    message = str(excinfo.value)
    assert "\n" not in message and "row 1 field" in message and fragment in message, message


# --------------------------------------------------------------------------- seeinpairs validate


def test_validate_reports_every_bad_image_and_row_in_one_pass(tmp_path):
    manifest, expected = make_corpus(tmp_path / "data")
    result = run_validate(manifest)
    assert_one_line_error(result, "manifest.csv", f"{len(expected)} problem(s)", "decoded in")
    reported = result.stdout.splitlines()
    for row, text in expected.items():
        assert any(f"row {row} field" in line and text in line for line in reported), (row, text, result.stdout)
    assert not any("row 1 field" in line for line in reported)  # the good row


def test_validate_quick_skips_decoding_but_not_the_manifest_rules(tmp_path):
    manifest, expected = make_corpus(tmp_path / "data")
    result = run_validate(manifest, "--quick")
    line = assert_one_line_error(result, "not decoded (--quick)")
    assert f"{len(BAD_ROWS)} problem(s)" in line  # only the manifest-level problems


def test_validate_with_task_needs_the_label_column(tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "m.csv").write_text("case_id,image,split\na,good.png,train\n")
    (tmp_path / "task.yaml").write_text("question: Is there an abnormal opacity?\nclasses: [normal, abnormal]\n"
                                        "healthy_class: normal\n")
    assert_one_line_error(run_validate(tmp_path / "m.csv", "--task", tmp_path / "task.yaml"),
                          "m.csv", "missing required column(s): label")


GOOD_DICOMS = ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
               "SC_rgb_jpeg_gdcm.dcm", "JPGExtended.dcm", "SC_rgb_rle_2frame.dcm"]


def test_validate_accepts_good_and_compressed_dicoms_and_says_how_long(tmp_path):
    lines = ["case_id,image,label,split", "png,good.png,normal,train"]
    (tmp_path / "good.png").write_bytes(png_bytes())
    for name in GOOD_DICOMS:
        (tmp_path / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
        lines.append(f"{name},{name},normal,validation")
    (tmp_path / "no_preamble.dcm").write_bytes(CT.read_bytes()[128:])  # the 128-byte preamble stripped
    lines.append("no_preamble,no_preamble.dcm,normal,test")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    result = run_validate(tmp_path / "m.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(GOOD_DICOMS) + 2
    assert f"{count} cases, {count} of {count} image(s) decoded in" in result.stdout
    assert "split=val label=normal" in result.stdout  # the alias normalised


@pytest.mark.parametrize("name", GOOD_DICOMS)
def test_compressed_dicoms_decode(name):
    assert load_image(get_testdata_file(name)).mode == "RGB"


def test_dicom_without_preamble_matches_the_original(tmp_path):
    for name, data in (("stripped.dcm", CT.read_bytes()[128:]), ("no_prefix.dcm", CT.read_bytes()[132:])):
        (tmp_path / name).write_bytes(data)
        np.testing.assert_array_equal(np.asarray(load_image(tmp_path / name)), np.asarray(load_image(CT)))
