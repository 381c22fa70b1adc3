"""Tests for seeinpairs.cases: manifest loading, validation in one pass, round trips."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seeinpairs.cases import Case, CaseTable, normalise_sex, read_table, with_split
from seeinpairs.errors import ManifestError, SeeInPairsError


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        (folder / name).write_bytes(b"\x89PNG fake " + name.encode())
    return folder


def write_csv(path: Path, rows: list[dict], sep: str = ",") -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest_error(path_or_frame, **kwargs) -> str:
    with pytest.raises(ManifestError) as excinfo:
        if isinstance(path_or_frame, pd.DataFrame):
            CaseTable.from_frame(path_or_frame, source="frame.csv", **kwargs)
        else:
            CaseTable.load(path_or_frame, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert isinstance(excinfo.value, SeeInPairsError)
    return message


ROWS = [
    {"case_id": "c1", "image": "images/a.png", "label": "normal", "patient_id": "p1", "age": "62", "sex": "male",
     "site": "s1", "split": "train", "scanner": "GE"},
    {"case_id": "c2", "image": "images/b.png", "label": "pneumonia", "patient_id": "p1", "age": "045Y", "sex": "F",
     "site": "s2", "split": "test", "scanner": "Siemens"},
    {"case_id": "c3", "image": "images/c.png", "label": "normal", "patient_id": "", "age": "", "sex": "",
     "site": "", "split": "test", "scanner": ""},
]


def check_loaded(table: CaseTable, image_dir: Path) -> None:
    assert [c.case_id for c in table] == ["c1", "c2", "c3"]
    c1, c2, c3 = table
    assert c1.images == (str((image_dir / "a.png").absolute()),)
    assert c1.image == c1.images[0]
    assert Path(c1.image).is_absolute() and Path(c1.image).is_file()
    assert (c1.label, c1.patient_id, c1.age, c1.sex, c1.site, c1.split) == ("normal", "p1", 62.0, "M", "s1", "train")
    assert (c2.age, c2.sex, c2.split) == (45.0, "F", "test")
    assert (c3.patient_id, c3.age, c3.sex, c3.site) == (None, None, None, None)
    assert c3.patient == "c3" and c1.patient == "p1"
    assert c1.extra == {"scanner": "GE"}
    assert c3.extra == {}


# --------------------------------------------------------------------------- loading formats


def test_load_csv(tmp_path, image_dir):
    check_loaded(CaseTable.load(write_csv(tmp_path / "m.csv", ROWS)), image_dir)


def test_load_tsv(tmp_path, image_dir):
    check_loaded(CaseTable.load(write_csv(tmp_path / "m.tsv", ROWS, sep="\t")), image_dir)


def test_load_jsonl(tmp_path, image_dir):
    rows = [{k: (None if v == "" else v) for k, v in r.items()} for r in ROWS]
    rows[0]["age"] = 62  # numbers as JSON numbers
    check_loaded(CaseTable.load(write_jsonl(tmp_path / "m.jsonl", rows)), image_dir)


def test_load_parquet(tmp_path, image_dir):
    path = tmp_path / "m.parquet"
    pd.DataFrame(ROWS).to_parquet(path, index=False)
    check_loaded(CaseTable.load(path), image_dir)


def test_load_csv_with_byte_order_mark(tmp_path, image_dir):
    path = tmp_path / "excel.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False, encoding="utf-8-sig")
    check_loaded(CaseTable.load(path), image_dir)


def test_relative_manifest_path_gives_absolute_images(tmp_path, image_dir, monkeypatch):
    write_csv(tmp_path / "m.csv", ROWS)
    monkeypatch.chdir(tmp_path)
    table = CaseTable.load("m.csv")
    assert all(Path(c.image).is_absolute() for c in table)
    monkeypatch.chdir(image_dir)  # still valid after moving elsewhere
    assert all(Path(c.image).is_file() for c in table)


def test_image_root(tmp_path, image_dir):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    rows = [{"case_id": "x", "image": "a.png"}, {"case_id": "y", "image": str(image_dir / "b.png")}]
    path = write_csv(manifests / "m.csv", rows)
    table = CaseTable.load(path, image_root=image_dir)
    assert table.get("x").image == str(image_dir / "a.png")
    assert table.get("y").image == str(image_dir / "b.png")  # absolute paths are kept
    # without image_root the manifest folder is the root, where a.png does not exist
    assert "file not found" in manifest_error(path)


def test_check_files_false(tmp_path):
    path = write_csv(tmp_path / "m.csv", [{"case_id": "x", "image": "missing.png"}])
    table = CaseTable.load(path, check_files=False)
    assert table[0].image == str(tmp_path / "missing.png")


def test_multi_image_csv(tmp_path, image_dir):
    rows = [{"case_id": "m1", "images": "images/a.png; images/b.png;images/c.png", "label": "normal"}]
    table = CaseTable.load(write_csv(tmp_path / "m.csv", rows))
    assert table[0].images == tuple(str(image_dir / n) for n in ("a.png", "b.png", "c.png"))
    assert table[0].image == str(image_dir / "a.png")


def test_multi_image_json_list_in_csv(tmp_path, image_dir):
    rows = [{"case_id": "m1", "images": json.dumps(["images/a.png", "images/b.png"])}]
    table = CaseTable.load(write_csv(tmp_path / "m.csv", rows))
    assert table[0].images == (str(image_dir / "a.png"), str(image_dir / "b.png"))


def test_image_name_starting_with_bracket(tmp_path):
    (tmp_path / "[1] scan.png").write_bytes(b"x")
    table = CaseTable.load(write_csv(tmp_path / "m.csv", [{"case_id": "b", "image": "[1] scan.png"}]))
    assert table[0].image == str(tmp_path / "[1] scan.png")


def test_multi_image_jsonl(tmp_path, image_dir):
    rows = [{"case_id": "m1", "images": ["images/a.png", "images/b.png"], "label": "normal"},
            {"case_id": "m2", "images": ["images/c.png"]}]
    table = CaseTable.load(write_jsonl(tmp_path / "m.jsonl", rows))
    assert table.get("m1").images == (str(image_dir / "a.png"), str(image_dir / "b.png"))
    assert table.get("m2").images == (str(image_dir / "c.png"),)


def test_multi_image_parquet(tmp_path, image_dir):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"case_id": ["m1", "m2"], "images": [["images/a.png", "images/b.png"], ["images/c.png"]],
                  "label": ["normal", None]}).to_parquet(path, index=False)
    table = CaseTable.load(path)
    assert table.get("m1").images == (str(image_dir / "a.png"), str(image_dir / "b.png"))
    assert table.get("m2").label is None


def test_numeric_ids_and_labels_in_jsonl(tmp_path, image_dir):
    rows = [{"case_id": 7, "image": "images/a.png", "label": 1, "patient_id": 100},
            {"case_id": 8, "image": "images/b.png", "label": 0, "patient_id": None}]
    table = CaseTable.load(write_jsonl(tmp_path / "m.jsonl", rows), classes=["0", "1"])
    assert [c.case_id for c in table] == ["7", "8"]
    assert [c.label for c in table] == ["1", "0"]
    assert table.get("7").patient_id == "100"
    assert table.get("8").patient == "8"


def test_leading_zero_ids_kept_as_text(tmp_path, image_dir):
    rows = [{"case_id": "007", "image": "images/a.png", "patient_id": "0012"}]
    for path in (write_csv(tmp_path / "m.csv", rows), write_jsonl(tmp_path / "m.jsonl", rows)):
        case = CaseTable.load(path)[0]
        assert (case.case_id, case.patient_id) == ("007", "0012")


def test_date_like_extra_column_stays_as_given(tmp_path, image_dir):
    rows = [{"case_id": "a", "image": "images/a.png", "study_date": "2020-01-02", "modified": "yesterday"}]
    case = CaseTable.load(write_jsonl(tmp_path / "m.jsonl", rows))[0]
    assert case.extra == {"study_date": "2020-01-02", "modified": "yesterday"}


def test_whitespace_in_headers_and_values(tmp_path, image_dir):
    path = tmp_path / "m.csv"
    path.write_text(" case_id , image ,label\n  c1 , images/a.png ,  normal \n")
    case = CaseTable.load(path)[0]
    assert (case.case_id, case.label) == ("c1", "normal")
    assert case.image == str(image_dir / "a.png")


def test_empty_manifest_with_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case_id,image,label\n")
    table = CaseTable.load(path)
    assert len(table) == 0 and table.splits == []


# --------------------------------------------------------------------------- field parsing


@pytest.mark.parametrize(
    "raw, expected",
    [("M", "M"), ("m", "M"), ("Male", "M"), (" male ", "M"), ("man", "M"), ("F", "F"), ("female", "F"),
     ("FEMALE", "F"), ("woman", "F"), ("O", "O"), ("other", "O"), ("", None), (None, None), (float("nan"), None)],
)
def test_sex_aliases(raw, expected):
    assert normalise_sex(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [("62", 62.0), ("062Y", 62.0), ("062y", 62.0), ("6M", 0.5), ("006M", 0.5), ("52W", 1.0), ("365D", 1.0),
     ("62.5", 62.5), ("0", 0.0), ("150", 150.0), (" 40 ", 40.0), ("40 Y", 40.0)],
)
def test_ages(tmp_path, image_dir, raw, expected):
    path = write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png", "age": raw}])
    assert CaseTable.load(path)[0].age == pytest.approx(expected)


# --------------------------------------------------------------------------- validation


def test_every_problem_reported_at_once(tmp_path, image_dir):
    rows = [
        {"case_id": "ok", "image": "images/a.png", "label": "normal", "age": "40", "sex": "M"},
        {"case_id": "c2", "image": "images/missing.png", "label": "normal", "age": "40", "sex": "M"},
        {"case_id": "c3", "image": "images/b.png", "label": "tumour", "age": "40", "sex": "M"},
        {"case_id": "ok", "image": "images/c.png", "label": "normal", "age": "40", "sex": "M"},
        {"case_id": "c5", "image": "images/d.png", "label": "normal", "age": "old", "sex": "M"},
        {"case_id": "c6", "image": "images/e.png", "label": "normal", "age": "200", "sex": "M"},
        {"case_id": "c7", "image": "images/a.png", "label": "normal", "age": "30", "sex": "robot"},
        {"case_id": "c8", "image": "", "label": "normal", "age": "30", "sex": "F"},
    ]
    message = manifest_error(write_csv(tmp_path / "m.csv", rows), classes=["normal", "pneumonia"])
    assert str(tmp_path / "m.csv") in message
    assert "7 problem(s)" in message
    assert "row 2 field 'image': file not found" in message and "missing.png" in message
    assert "row 3 field 'label': 'tumour' is not one of [normal, pneumonia]" in message
    assert "row 4 field 'case_id': 'ok' already used in row 1" in message
    assert "row 5 field 'age'" in message and "'old'" in message
    assert "row 6 field 'age'" in message and "150" in message
    assert "row 7 field 'sex'" in message and "robot" in message
    assert "row 8 field 'image': no image given" in message


def test_duplicate_row_is_still_checked(tmp_path, image_dir):
    rows = [{"case_id": "a", "image": "images/a.png"}, {"case_id": "a", "image": "images/b.png", "sex": "??"}]
    message = manifest_error(write_csv(tmp_path / "m.csv", rows))
    assert "row 2 field 'case_id'" in message and "row 2 field 'sex'" in message


def test_empty_case_id(tmp_path, image_dir):
    message = manifest_error(write_csv(tmp_path / "m.csv", [{"case_id": " ", "image": "images/a.png"}]))
    assert "row 1 field 'case_id': empty" in message


def test_unknown_label_without_classes_is_allowed(tmp_path, image_dir):
    path = write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png", "label": "anything"}])
    assert CaseTable.load(path)[0].label == "anything"


@pytest.mark.parametrize("age", ["-1", "151", "abc", "inf", "nan", "12X"])
def test_bad_ages(tmp_path, image_dir, age):
    message = manifest_error(write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png", "age": age}]))
    assert "row 1 field 'age'" in message


def test_bad_sex_names_value(tmp_path, image_dir):
    message = manifest_error(write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png", "sex": "X"}]))
    assert "row 1 field 'sex': 'X' is not a sex" in message


def test_many_problems_are_counted(tmp_path):
    rows = [{"case_id": f"c{i}", "image": f"missing{i}.png"} for i in range(20)]
    message = manifest_error(write_csv(tmp_path / "m.csv", rows))
    assert "20 problem(s)" in message and "and 12 more" in message


def test_missing_required_columns(tmp_path):
    message = manifest_error(write_csv(tmp_path / "m.csv", [{"label": "x", "age": "3"}]))
    assert "missing required column(s)" in message and "case_id" in message and "image" in message
    message = manifest_error(write_csv(tmp_path / "n.csv", [{"case_id": "x"}]))
    assert "image (or images)" in message and str(tmp_path / "n.csv") in message


def test_multiline_values_keep_message_on_one_line(tmp_path):
    frame = pd.DataFrame([{"case_id": "a", "image": "x.png", "sex": "not\na sex", "age": "1\r\n2"}])
    message = manifest_error(frame, check_files=False)
    assert "row 1 field 'sex'" in message and "row 1 field 'age'" in message


def test_manifest_not_found(tmp_path):
    path = tmp_path / "absent.csv"
    message = manifest_error(path)
    assert str(path) in message and "not found" in message


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "m.xlsx"
    path.write_bytes(b"PK")
    message = manifest_error(path)
    assert str(path) in message and "unsupported" in message


@pytest.mark.parametrize(
    "name, content",
    [("m.parquet", b"not parquet at all"), ("m.jsonl", b'{"case_id": "a",\nbroken'), ("m.csv", b""),
     ("m.csv", b'case_id,image\n"unterminated,x\n'), ("m.csv", b"\xff\xfe\x00garbage\x00")],
)
def test_unparseable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    message = manifest_error(path)
    assert str(path) in message


def test_read_table_on_directory(tmp_path):
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(ManifestError):
        read_table(folder)


# --------------------------------------------------------------------------- CaseTable behaviour


def make_table() -> CaseTable:
    return CaseTable([
        Case("a", ("/x/a.png",), label="normal", split="train"),
        Case("b", ("/x/b.png",), label="pneumonia", split="train"),
        Case("c", ("/x/c.png",), label="normal", split="test"),
        Case("d", ("/x/d.png",), label="effusion", split="test"),
        Case("e", ("/x/e.png",), label=None, split=None),
    ], source="mem")


def test_filter_by_split_and_label():
    table = make_table()
    assert [c.case_id for c in table.filter(split="train")] == ["a", "b"]
    assert [c.case_id for c in table.filter(labels=["normal"])] == ["a", "c"]
    assert [c.case_id for c in table.filter(split="test", labels={"normal", "effusion"})] == ["c", "d"]
    assert [c.case_id for c in table.filter(split="val")] == []
    assert len(table.filter()) == 5
    assert [c.case_id for c in table.filter(labels="normal")] == ["a", "c"]  # one label as a string
    assert table.splits == ["test", "train"]


def test_sequence_protocol_and_get():
    table = make_table()
    assert len(table) == 5 and table[0].case_id == "a" and table[-1].case_id == "e"
    sliced = table[1:3]
    assert isinstance(sliced, CaseTable) and [c.case_id for c in sliced] == ["b", "c"]
    assert table.get("d").label == "effusion"
    with pytest.raises(ManifestError, match="no case with case_id 'zz'"):
        table.get("zz")


def test_duplicate_ids_in_memory():
    with pytest.raises(ManifestError, match="'a' occurs more than once"):
        CaseTable([Case("a", ("x",)), Case("a", ("y",))])


def test_case_defaults_and_helpers():
    case = Case("q1", ("/x/1.png", "/x/2.png"), extra={"k": 1})
    assert case.patient == "q1" and case.image == "/x/1.png"
    record = case.to_record()
    assert record["images"] == ["/x/1.png", "/x/2.png"] and record["extra"] == {"k": 1}
    moved = with_split(case, "test")
    assert moved.split == "test" and case.split is None
    assert Case("q1", ("/x/1.png", "/x/2.png"), extra={"k": 2}) == case  # extra does not take part in equality
    assert hash(case) == hash(Case("q1", ("/x/1.png", "/x/2.png")))


# --------------------------------------------------------------------------- path confinement and splits


@pytest.mark.parametrize("entry", ["../../../../etc/passwd", "/etc/passwd", "link.png", "images/../../x.png"])
def test_image_outside_the_data_folder_is_refused(tmp_path, entry):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    (data / "link.png").symlink_to(outside / "x.png")  # a link out of the data folder
    path = write_csv(data / "m.csv", [{"case_id": "a", "image": entry}])
    message = manifest_error(path)
    assert f"row 1 field 'image': '{entry}' lies outside the data folder" in message
    assert "--allow-outside-root" in message
    assert len(CaseTable.load(path, allow_outside_root=True, check_files=False)) == 1  # the opt-out


def test_image_under_image_root_or_extra_root_is_allowed(tmp_path, image_dir):
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    path = write_csv(elsewhere / "m.csv", [{"case_id": "a", "image": str(image_dir / "a.png")}])
    assert "outside" in manifest_error(path)
    assert len(CaseTable.load(path, image_root=image_dir)) == 1
    assert len(CaseTable.load(path, roots=[tmp_path])) == 1


def test_symlink_inside_the_data_folder_is_allowed(tmp_path, image_dir):
    (image_dir / "alias.png").symlink_to(image_dir / "a.png")
    table = CaseTable.load(write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/alias.png"}]))
    assert table[0].image == str(image_dir / "alias.png")  # the path as given, made absolute


@pytest.mark.parametrize("raw, expected", [("train", "train"), ("Training", "train"), ("validation", "val"),
                                           ("valid", "val"), ("dev", "val"), ("TEST", "test"), ("testing", "test"),
                                           ("site_reference", "site_reference"), ("", None)])
def test_split_aliases(tmp_path, image_dir, raw, expected):
    path = write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png", "split": raw}])
    assert CaseTable.load(path)[0].split == expected


def test_unknown_split_names_row_and_value(tmp_path, image_dir):
    rows = [{"case_id": "a", "image": "images/a.png", "split": "train"},
            {"case_id": "b", "image": "images/b.png", "split": "holdout??"}]
    message = manifest_error(write_csv(tmp_path / "m.csv", rows))
    assert "row 2 field 'split': 'holdout??' is not a split (use train, val, test" in message


def test_task_classes_need_the_label_column(tmp_path, image_dir):
    path = write_csv(tmp_path / "m.csv", [{"case_id": "a", "image": "images/a.png"}])
    assert "missing required column(s): label" in manifest_error(path, classes=["normal", "abnormal"])
    assert len(CaseTable.load(path)) == 1  # without a task, labels are optional


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_round_trip(tmp_path, image_dir, suffix):
    rows = ROWS + [{"case_id": "multi", "image": "images/a.png;images/b.png", "label": "normal", "patient_id": "p9",
                    "age": "006M", "sex": "o", "site": "s1", "split": "val", "scanner": "GE"}]
    original = CaseTable.load(write_csv(tmp_path / "m.csv", rows))
    saved = original.save(tmp_path / "out" / f"saved{suffix}")
    assert saved.is_file()
    loaded = CaseTable.load(saved, roots=[tmp_path])  # the images lie beside out/, not under it
    assert list(loaded) == list(original)
    assert [c.extra for c in loaded] == [c.extra for c in original]
    assert loaded.get("multi").age == original.get("multi").age == pytest.approx(0.5)


def test_round_trip_awkward_paths(tmp_path):
    names = ["[x].png", "semi;colon.png", "space name.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    original = CaseTable([Case("a", tuple(str(tmp_path / n) for n in names)), Case("b", (str(tmp_path / names[0]),))])
    for suffix in (".csv", ".jsonl", ".parquet"):
        loaded = CaseTable.load(original.save(tmp_path / f"out{suffix}"))
        assert list(loaded) == list(original), suffix


def test_save_unsupported_suffix(tmp_path):
    with pytest.raises(ManifestError, match="unsupported"):
        make_table().save(tmp_path / "out.xlsx")


def test_to_frame_columns():
    frame = make_table().to_frame()
    assert list(frame.columns)[:8] == ["case_id", "images", "label", "patient_id", "age", "sex", "site", "split"]
    empty = CaseTable([]).to_frame()
    assert list(empty.columns) == ["case_id", "images", "label", "patient_id", "age", "sex", "site", "split"]


# --------------------------------------------------------------------------- property test

_text = st.text(alphabet=string.ascii_letters + string.digits + "_-. ()", min_size=1, max_size=12).map(str.strip).filter(
    lambda s: s != ""
)
_optional_text = st.none() | _text
_age = st.none() | st.floats(min_value=0, max_value=150, allow_nan=False, allow_infinity=False)
_case = st.builds(
    lambda cid, n, label, patient, age, sex, site, split: dict(
        case_id=cid, n_images=n, label=label, patient_id=patient, age=age, sex=sex, site=site, split=split
    ),
    _text, st.integers(1, 3), _optional_text, _optional_text, _age, st.sampled_from([None, "M", "F", "O"]),
    _optional_text, st.sampled_from([None, "train", "val", "test"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_case, min_size=1, max_size=6, unique_by=lambda r: r["case_id"]),
       suffix=st.sampled_from([".csv", ".jsonl"]))
def test_property_round_trip(tmp_path_factory, rows, suffix):
    folder = tmp_path_factory.mktemp("prop")
    cases = []
    for number, row in enumerate(rows):
        images = []
        for k in range(row["n_images"]):
            image = folder / f"img{number}_{k}.png"
            image.write_bytes(b"x")
            images.append(str(image))
        fields = {k: v for k, v in row.items() if k != "n_images"}
        cases.append(Case(images=tuple(images), **fields))
    original = CaseTable(cases)
    loaded = CaseTable.load(original.save(folder / f"manifest{suffix}"))
    assert list(loaded) == list(original)
    for case in loaded:
        assert case.patient == (case.patient_id or case.case_id)
    assert os.listdir(folder)
