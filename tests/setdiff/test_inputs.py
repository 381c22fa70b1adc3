import json

import pytest
from setdiff_helpers import write_image

from seeinpairs.cases import Case, CaseTable
from seeinpairs.setdiff import (
    SetDiffError,
    load_pairs,
    load_raddiff,
    load_visdiff_csv,
    load_visdiff_jsonl,
    pair_from_table,
)
from seeinpairs.setdiff.inputs import difficulty_level, parse_filter

pytest_plugins = ["setdiff_fixtures"]  # small_pairs, tiny_clip, raddiff_files


def test_raddiff_keeps_set_strings_byte_exact_drops_gstmp_and_joins_difficulty(raddiff_files, tmp_path):
    jsonl, csv, rows = raddiff_files
    with pytest.warns(UserWarning, match=r"line 1 field 'set1_images': dropped 1 non-image path.*\.jpg_\.gstmp"):
        pairs = load_raddiff(jsonl, image_root=tmp_path / "files", difficulty_csv=csv)
    assert [p.set1_condition for p in pairs] == [r["set1"] for r in rows]
    assert pairs[0].set1_condition.encode() == b"pleural effusion "
    assert pairs[0].set2_condition == "no finding "
    assert len(pairs[0].set1) == 2 and all(p.endswith(".jpg") for p in pairs[0].set1.images)
    assert pairs[0].set1.images[0] == str(tmp_path / "files" / "p10/p10000032/s50414267/02aa804e.jpg")
    assert [p.difficulty for p in pairs] == ["easy", "hard"]
    assert pairs[1].truth == "enlarge cardiac silhouette "


def test_raddiff_errors_name_file_line_and_field(raddiff_files, tmp_path):
    jsonl, _, _ = raddiff_files
    short = tmp_path / "short.csv"
    short.write_text("difficulty\neasy\n")
    with pytest.raises(SetDiffError, match="1 rows but the benchmark has 2 pairs"):
        load_raddiff(jsonl, difficulty_csv=short)
    bad = tmp_path / "bad.csv"
    bad.write_text("difficulty\neasy\nextreme\n")
    with pytest.raises(SetDiffError, match="line 3: field 'difficulty' is 'extreme'"):
        load_raddiff(jsonl, difficulty_csv=bad)
    out_of_range = tmp_path / "codes.csv"
    out_of_range.write_text("difficulty\n2.0\n4.0\n")
    with pytest.raises(SetDiffError, match="line 3: field 'difficulty' is '4.0'"):
        load_raddiff(jsonl, difficulty_csv=out_of_range)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"set1": "a ", "set2": "b ", "set1_images": ["x.jpg"]}) + "\n")
    with pytest.raises(SetDiffError, match="line 1: field 'set2_images' is missing"):
        load_raddiff(broken)
    only_tmp = tmp_path / "tmp.jsonl"
    only_tmp.write_text(json.dumps({"set1": "a ", "set2": "b ", "set1_images": ["x.jpg_.gstmp"],
                                    "set2_images": ["y.jpg"]}) + "\n")
    with pytest.raises(SetDiffError, match="no image paths left"), pytest.warns(UserWarning):
        load_raddiff(only_tmp)


@pytest.mark.parametrize("value, level", [("easy", "easy"), (" Hard ", "hard"), ("1.0", "easy"), ("2", "medium"),
                                          ("3.0", "hard"), ("0", None), ("2.5", None), ("extreme", None), ("", None)])
def test_difficulty_levels_by_name_or_release_code(value, level):
    assert difficulty_level(value) == level


def test_visdiff_jsonl_and_csv(tmp_path):
    for group in ("dogs_on_grass", "dogs_indoors"):
        for i in range(3):
            write_image(tmp_path / "images" / group / f"{i}.jpg", 40 * i)
    jsonl = tmp_path / "medium.jsonl"
    jsonl.write_text(json.dumps({"set1": "dogs_on_grass", "set2": "dogs_indoors", "difference": "grass"}) + "\n")
    pairs = load_visdiff_jsonl(jsonl, image_root=tmp_path / "images")
    assert len(pairs) == 1 and pairs[0].difference == "grass" and pairs[0].difficulty == "medium"
    assert len(pairs[0].set1) == 3 and pairs[0].truth == "grass"
    assert load_pairs(jsonl, image_root=tmp_path / "images")[0].set2.name == "dogs_indoors"

    csv = tmp_path / "pairs.csv"
    lines = ["path,group_name,difference,difficulty"]
    for group, diff in (("dogs_on_grass", "grass"), ("dogs_indoors", "grass")):
        lines += [f"images/{group}/{i}.jpg,{group},{diff},easy" for i in range(3)]
    csv.write_text("\n".join(lines) + "\n")
    pairs = load_pairs(csv)
    assert len(pairs) == 1 and pairs[0].set1.name == "dogs_on_grass" and pairs[0].difficulty == "easy"
    assert pairs[0].set1.images[0] == str(tmp_path / "images/dogs_on_grass/0.jpg")
    (tmp_path / "three.csv").write_text("path,group_name\na.jpg,x\nb.jpg,y\nc.jpg,z\n")
    with pytest.raises(SetDiffError, match="field 'group_name' has 3 groups"):
        load_visdiff_csv(tmp_path / "three.csv")


def _table() -> CaseTable:
    cases = [Case(f"c{i}", (f"/img/{i}.png",), label="pneumonia" if i % 2 else "normal", age=20.0 + 10 * i,
                  sex="F" if i < 3 else "M", site="A" if i < 4 else "B") for i in range(6)]
    return CaseTable(cases, "cases.csv")


def test_case_table_filters():
    pair = pair_from_table(_table(), "label == pneumonia", "label == normal")
    assert [m["case_id"] for m in pair.set1.metadata] == ["c1", "c3", "c5"]
    assert pair.set1.images == ["/img/1.png", "/img/3.png", "/img/5.png"]
    pair = pair_from_table(_table(), "site == A and age >= 40", "site == B")
    assert [m["case_id"] for m in pair.set1.metadata] == ["c2", "c3"]
    assert parse_filter("age < 30")(_table()[0]) and not parse_filter("sex in M,O")(_table()[0])
    with pytest.raises(SetDiffError, match="both select"):
        pair_from_table(_table(), "age >= 20", "site == B")
    with pytest.raises(SetDiffError, match="selects no case"):
        pair_from_table(_table(), "label == effusion", "site == B")
    with pytest.raises(SetDiffError, match="cannot read 'label ~ x'"):
        parse_filter("label ~ x")
    with pytest.raises(SetDiffError, match="'old' is not a number"):
        parse_filter("age > old")
