import pytest

from seeinpairs.jsonl import JsonLineError, read_json_lines


def test_records_with_line_numbers_blank_lines_skipped_and_bom_tolerated(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes('\ufeff{"a": 0.1000000000000000055511151231257827}\n\n{"b": "2024-01-02"}\n'.encode())
    rows = list(read_json_lines(path))
    assert [n for n, _ in rows] == [1, 3]
    assert rows[0][1]["a"] == 0.1 and rows[1][1]["b"] == "2024-01-02"  # values as written, no date parsing


@pytest.mark.parametrize("text, problem", [('{"a": 1}\n{"a": \n', "json"), ('{"a": 1}\n[1, 2]\n', "object")])
def test_problems_name_the_line(tmp_path, text, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(JsonLineError, match="line 2") as info:
        list(read_json_lines(path))
    assert info.value.problem == problem and info.value.line_no == 2
