import copy
import json

import pytest
from mim_layouts import COREFERENCE, ODIR, ODIR_NOISY, TEMPORAL, image_file, write_items

from seeinpairs.mim.format import (
    FileKind,
    MimDataset,
    MimFormatError,
    check_root_names,
    file_kind,
    load_mim_file,
    read_mim_file,
    source_dataset,
    split_options,
    write_mim_file,
)


def test_reads_the_exact_layout(mim_files):
    files, roots = mim_files
    dataset = MimDataset.load(list(files.values()), roots, check_images="open")
    assert len(dataset) == 5
    items = {item.uid: item for item in dataset}
    # duplicate ids are kept apart by (file, index)
    first, second = items["Med_MIM_benchmark_Held_in_Temporal.json#0"], items["Med_MIM_benchmark_Held_in_Temporal.json#1"]
    assert first.id == second.id == "3512" and first.key != second.key
    # trailing spaces after an option, no final newline, and a final newline all parse
    assert first.options == ("improved", "stable", "worsened") and first.gold == 2
    assert second.options == ("yes", "no") and second.gold == 1 and second.gold_answer == "B: no"
    assert first.split == "held_in" and first.subset == "temporal" and first.dataset == "MS_CXR_T"
    open_ended = items["Med_MIM_benchmark_Held_in_Temporal.json#2"]
    assert not open_ended.multiple_choice and open_ended.gold is None and open_ended.chance is None
    three = items["Med_MIM_benchmark_Held_in_Coreference.json#0"]
    assert len(three.images) == 3 and three.option_answers[0] == "A: the first image"
    eyes = items["Med_MIM_benchmark_Held_out_ODIR.json#0"]
    assert eyes.style == "conversations" and eyes.split == "held_out" and eyes.subset == "odir"
    assert eyes.dataset == "VQA_ODIR" and eyes.gold == 1
    paths = dataset.image_paths(eyes)
    assert paths[0].name == "123_left.jpg" and paths[0].parent.name == "Training Images"
    images = dataset.images(eyes)
    assert len(images) == 2 and images[0].mode == "RGB"


def test_writer_round_trips_both_styles(mim_files, tmp_path):
    files, _roots = mim_files
    for path in files.values():
        items = load_mim_file(path)
        copy_path = write_mim_file(items, tmp_path / "copy" / path.name)
        assert json.loads(copy_path.read_text()) == json.loads(path.read_text())
        assert load_mim_file(copy_path) == items


@pytest.mark.parametrize("name, kind", [
    ("Med_MIM_benchmark_Held_in_Temporal.json", FileKind("held_in", "temporal")),
    ("Med_MIM_benchmark_Held_in_Coreference.json", FileKind("held_in", "coreference")),
    ("Med_MIM_benchmark_Held_out_RAD.json", FileKind("held_out", "rad")),
    ("Med_MIM_train_inherent_Reasoning.json", FileKind("train", "reasoning")),
])
def test_file_kinds(name, kind):
    assert file_kind(name) == kind
    assert kind.file_name() == name


@pytest.mark.parametrize("source, dataset", [
    ("MS_CXR_T_0012", "MS_CXR_T"), ("EMBED_5", "EMBED"), ("LUMIERE_p1_w3", "LUMIERE"),
    ("VQA_ODIR_123", "VQA_ODIR"), ("VQA_RAD_9", "VQA_RAD"), ("MYSET_17", "MYSET"),
])
def test_source_datasets(source, dataset):
    assert source_dataset(source) == dataset


def test_option_lines():
    assert split_options("<image>Q?\nA: x\nB: y") == ("<image>Q?", ["x", "y"])
    assert split_options("<image>Q? no options") == ("<image>Q? no options", [])
    with pytest.raises(ValueError, match="in order"):
        split_options("Q?\nA: x\nC: y")


def _mutated(change) -> list:
    items = copy.deepcopy(TEMPORAL[:1])
    change(items[0])
    return items


@pytest.mark.parametrize("name, items, message", [
    ("Med_MIM_benchmark_Held_in_Temporal.json",
     _mutated(lambda i: i["conversation"][0].update(content="<image>Q?\nA: x\nB: y")),
     "field 'conversation': 1 <image> placeholder(s) but 2 image(s)"),
    ("Med_MIM_benchmark_Held_in_Temporal.json",
     _mutated(lambda i: i["conversation"][0].update(content="<image><image>Q?\nA: x\nC: y")),
     "malformed options: option letters A, C"),
    ("Med_MIM_benchmark_Held_in_Temporal.json",
     _mutated(lambda i: i["conversation"][1].update(content="D: nothing")),
     "malformed options: the answer letter D is not among the options A-C"),
    ("Med_MIM_benchmark_Held_in_Temporal.json",
     _mutated(lambda i: i["conversation"][1].update(content="worsened")),
     "malformed options: the answer 'worsened' does not start with an option letter"),
    ("Med_MIM_benchmark_Held_in_Temporal.json", _mutated(lambda i: i.pop("images")), "field 'images'"),
    ("Med_MIM_benchmark_Held_in_Temporal.json", _mutated(lambda i: i.pop("conversation")), "field 'conversation'"),
    ("Med_MIM_benchmark_Held_in_Temporal.json",
     _mutated(lambda i: i["conversation"].reverse()), "the first turn's 'role' must be user"),
    ("Med_MIM_benchmark_Held_in_Spatial.json", TEMPORAL, "unknown ability 'Spatial'"),
    ("questions.json", TEMPORAL, "unknown file kind"),
])
def test_validation_errors_are_one_line(tmp_path, name, items, message):
    path = write_items(tmp_path / name, items)
    with pytest.raises(MimFormatError) as info:
        load_mim_file(path)
    text = str(info.value)
    assert message in text and "\n" not in text and name in text
    if "item" in message or "field" in message:
        assert "item 0 (id 3512)" in text


def test_missing_and_corrupt_images_name_the_item(mim_files):
    files, roots = mim_files
    (roots["MS_CXR_T"] / "p2" / "two.png").unlink()
    with pytest.raises(MimFormatError, match=r"Temporal.json: item 2 \(id 77\): field 'images\[1\]': image not found"):
        MimDataset.load(files["temporal"], roots)
    (roots["VQA_ODIR"] / "Training Images" / "123_right.jpg").write_bytes(b"not an image")
    MimDataset.load(files["odir"], roots)  # existence only by default
    with pytest.raises(MimFormatError, match=r"ODIR.json: item 0 \(id 123\): field 'images\[1\]': corrupt image"):
        MimDataset.load(files["odir"], roots, check_images="open")
    lazy = MimDataset.load(files["odir"], roots, check_images="none")
    with pytest.raises(MimFormatError, match=r"item 0 \(id 123\): field 'images\[1\]'"):
        lazy.images(lazy.items[0])


def test_not_a_list_and_bad_json(tmp_path):
    path = tmp_path / "Med_MIM_benchmark_Held_in_Temporal.json"
    path.write_text("{}")
    with pytest.raises(MimFormatError, match="expected a JSON list"):
        load_mim_file(path)
    path.write_text("[{")
    with pytest.raises(MimFormatError, match="not valid JSON"):
        load_mim_file(path)


def test_images_default_to_the_json_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    image_file(tmp_path / "imgs" / "a b.png", 1)
    image_file(tmp_path / "imgs" / "c.png", 2)
    item = copy.deepcopy(ODIR[0])
    item["images"] = ["imgs/a b.png", "imgs/c.png"]
    path = write_items(tmp_path / "Med_MIM_benchmark_Held_out_ODIR.json", [item])
    dataset = MimDataset.load(path, check_images="open")
    assert dataset.image_paths(dataset.items[0])[0] == tmp_path / "imgs" / "a b.png"
    assert COREFERENCE[0]["id"] == "c1"


def test_a_noisy_item_is_skipped_and_reported_not_fatal(mim_files, tmp_path):
    files, roots = mim_files
    path = write_items(tmp_path / "Med_MIM_benchmark_Held_out_ODIR.json", [ODIR[0], ODIR_NOISY, ODIR[0]])
    items, skipped = read_mim_file(path)
    assert [item.index for item in items] == [0, 2]
    assert len(skipped) == 1 and skipped[0].index == 1 and skipped[0].id == "456"
    assert "item 1 (id 456)" in skipped[0].reason and "malformed options" in skipped[0].reason
    dataset = MimDataset.load(path, {"VQA_ODIR": roots["VQA_ODIR"]}, strict=False)
    assert len(dataset) == 2 and [s.index for s in dataset.skipped] == [1]
    assert dataset.subset(lambda item: True).skipped == dataset.skipped
    with pytest.raises(MimFormatError, match=r"item 1 \(id 456\).*malformed options"):
        MimDataset.load(path, {"VQA_ODIR": roots["VQA_ODIR"]})  # strict by default in the library
    with pytest.raises(MimFormatError, match="item 1"):
        load_mim_file(path)


def test_a_misspelt_image_root_is_an_error_naming_the_data_sets(mim_files):
    files, roots = mim_files
    dataset = MimDataset.load(files["odir"], check_images="none")
    with pytest.raises(MimFormatError, match=r"image root 'ODIR': .*VQA_ODIR.*MS_CXR_T, EMBED"):
        check_root_names({"ODIR": roots["VQA_ODIR"]}, dataset)
    # a root for another Med-MIM data set than the file's is fine (one set of roots for all files)
    check_root_names({**roots, "*": roots["VQA_ODIR"]}, dataset)


def test_image_problems_lists_every_missing_image(mim_files):
    files, roots = mim_files
    dataset = MimDataset.load(list(files.values()), check_images="none")  # no roots: all images missing
    problems = list(dataset.image_problems())
    assert len(problems) == sum(len(item.images) for item in dataset)
    assert all("image not found" in p for p in problems)
